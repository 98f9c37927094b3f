"""Evidence of contribution records: photos and PDFs a member attaches to their own pending or
returned record (at most nine), read by the member and by officers over the record's
organization.  `media` receives and cleans an upload, `repository` holds the rows, `service`
the rules, `router` the HTTP; the bytes live in object storage (`app.integrations.storage`)."""
