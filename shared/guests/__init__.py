"""B2B guests as Contacts under their company's Account, and Entra org data on linked Contacts (issue 11).

`plan` decides (pure), `graph_reader` and `salesforce_io` read and write, `links` remembers (Redis), `service` runs
one user end to end; the sync lane's `sync.contact_changed` task (workers/guests.py) calls `service.sync_contact`.
"""
