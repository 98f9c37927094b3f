"""Queries and counter updates of activities, one module per subject.

- `activities`: one activity with its host's path, its co-hosts;
- `listing`: the members' list (filters, distance, keyset pages);
- `signups`: sign-ups read back (a member's own, the roster, waitlist positions);
- `seats`: the seat and waitlist counters, moved by conditional UPDATEs;
- `attendance`: attendance records and the service hours credited.

The statements members hit most (the activity list, my sign-ups) and the officers' roster
select only the columns they return and are built once, at import; a request only adds its
filters and binds its values.  Rows come back as named tuples (`rows.typed`), so that a
column missing from a statement fails loudly rather than somewhere downstream.

Who may see what is not decided here: the list applies the clause `app.authz.activities`
gives it.
"""
