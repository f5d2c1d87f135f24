"""Remedy's worker-side counters (remedy.metrics), read from what activities and incident
workflows return, so no activity or workflow carries metrics code of its own.

A workflow's result counts once: when it is returned for real, not when a worker replays a
closed incident's history to answer a query (`workflow.unsafe.is_replaying`).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from remedy import metrics
from remedy.models import IncidentStatus


class MetricsInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CountActivityResults(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _CountIncidentOutcomes


class _CountActivityResults(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await super().execute_activity(input)
        metrics.observe_activity_result(result)
        return result


class _CountIncidentOutcomes(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        result = await super().execute_workflow(input)
        if isinstance(result, IncidentStatus) and not workflow.unsafe.is_replaying():
            # The counters live outside the sandbox; incrementing one issues no command.
            with workflow.unsafe.sandbox_unrestricted():
                metrics.observe_incident_closed(result)
        return result
