"""Activities (活动共搞): organizations host them, members sign up and check in on site, and
attendance credits service hours.

- `lifecycle`: create, edit, publish, cancel, complete;
- `signups`: signing up and cancelling, seats and the waitlist;
- `attendance`: rotating codes (`codes`), on-site check-ins, officers' marks, credits;
- `views`: the members' list, one activity, my sign-ups, the roster, and their shapes;
- `access`: loading one activity for an act, with `app.authz.activities` deciding who may;
- `errors`: the problem codes; `repository`: the queries; `router`: the HTTP layer.
"""

from app.activities import errors as errors  # registers the problem codes
