"""The one engine: what a user should have in Salesforce, computed by pure functions, diffed into a `Plan`.

The I/O part reads Entra (`EntraUser.from_graph`, selecting `graph_properties(mapping)`), the org's `Catalog`, the
candidates for matching (`matching_query_terms` -> one SOQL per batch -> `match_user`) and each user's
`SalesforceUserState` (selecting `user_fields_to_read(mapping)`), then calls `plan(...)` and executes the changes.
No network, no Redis in this package.
"""

from shared.engine.catalog import Catalog, FieldMeta, PermissionSetInfo
from shared.engine.desired import DesiredField, DesiredUser, Grant, desired_user
from shared.engine.entra import EntraUser, graph_properties
from shared.engine.matching import CandidateIndex, MatchOutcome, match_user, matching_query_terms
from shared.engine.names import check_names
from shared.engine.naming import alias_for, nickname_for, username_candidates
from shared.engine.plan import REQUIRED_ON_CREATE, Change, ChangeKind, Plan, PlanAction, plan
from shared.engine.reviews import ReviewCode, ReviewItem
from shared.engine.salesforce_state import SalesforceUserState, entitlement_key, user_fields_to_read

__all__ = [
    "REQUIRED_ON_CREATE",
    "CandidateIndex",
    "Catalog",
    "Change",
    "ChangeKind",
    "DesiredField",
    "DesiredUser",
    "EntraUser",
    "FieldMeta",
    "Grant",
    "MatchOutcome",
    "PermissionSetInfo",
    "Plan",
    "PlanAction",
    "ReviewCode",
    "ReviewItem",
    "SalesforceUserState",
    "alias_for",
    "check_names",
    "desired_user",
    "entitlement_key",
    "graph_properties",
    "match_user",
    "matching_query_terms",
    "nickname_for",
    "plan",
    "user_fields_to_read",
    "username_candidates",
]
