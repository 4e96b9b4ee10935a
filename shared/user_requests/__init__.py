"""The reverse flow (issue 11): approved `User_Provisioning_Request__c` records become Entra accounts.

`record` reads a request, `upn` makes UPNs, `progress` holds the per-request lock and progress (Redis),
`watermark` the poller's durable position, `fulfil` carries one request out; the request poller
(`producers/request_poller.py`) publishes `request.approved` events and `sync.provision_request`
(`workers/requests.py`) calls `fulfil.fulfil_request`.
"""
