"""奉献双岗位 dual-post contributions: a member logs what they did at their enterprise duty post
or social service post; officers of the organization's tree review it.

- `records`: the union of manual records and activity credits every list reads;
- `rules`: what a record must satisfy; `service`/`repository`: its states and their SQL;
- `categories`: the categories of each post;
- `evidence/`: photos and PDFs attached to a record.

Statistics and exports over a subtree are in `app.reports`.
"""
