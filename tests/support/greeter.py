"""A minimal workflow + activity used to prove the Temporal wiring (kept import-light)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow


class Greeting(BaseModel):
    name: str


class Greeted(BaseModel):
    text: str
    attempt: int


@activity.defn(name="test.greet")
async def greet(arg: Greeting) -> Greeted:
    return Greeted(text=f"hello {arg.name}", attempt=activity.info().attempt)


@workflow.defn(name="test.Greeter")
class Greeter:
    @workflow.run
    async def run(self, arg: Greeting) -> Greeted:
        return await workflow.execute_activity(
            greet, arg, start_to_close_timeout=timedelta(seconds=10)
        )
