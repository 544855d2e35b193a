"""Stable names that cross process and version boundaries.

Activity, signal, update, query and search-attribute names are explicit strings here so
that renaming a Python function never breaks a running workflow or a user's script.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

WORKFLOW_SESSION = "vigil.AgentSession"
WORKFLOW_PING = "vigil.Ping"

# Search attributes (registered by `vigil stack up`, checked by `vigil doctor`).
SA_AGENT = SearchAttributeKey.for_keyword("VigilAgent")
SA_STATUS = SearchAttributeKey.for_keyword("VigilStatus")
SA_STEP = SearchAttributeKey.for_int("VigilStep")
SA_GOAL = SearchAttributeKey.for_text("VigilGoal")
SA_SCHEDULE = SearchAttributeKey.for_keyword("VigilSchedule")

SEARCH_ATTRIBUTES = (SA_AGENT, SA_STATUS, SA_STEP, SA_GOAL, SA_SCHEDULE)
