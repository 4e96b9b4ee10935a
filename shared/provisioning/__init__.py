"""The I/O around the engine: read Entra and Salesforce for a batch of users, plan with `shared.engine.plan`, and
apply through sObject Collections. `batch.sync_users` is the entry point for the sync lane, `idsync sync-user` and
reconciliation alike."""
