"""Runs a synthesized JSONata state machine offline: every expression through the real JSONata engine.

The definition comes from the template (its Fn::Join parts rendered by tests/cfn_eval.py), so what
runs is what CloudFormation would deploy. Service calls go to a scripted fake (`Services`): each
call is recorded with its evaluated Arguments and answered from a queue of results or errors, so
a test states what AWS answers and checks what the workflow did.

Semantics kept from Step Functions' JSONata mode:
- a string field `{% expr %}` is an expression; other values are literal (recursively);
- `$states.input`, `$states.result`, `$states.errorOutput`, `$states.context` are bound per state;
- Assign and Output of one state both see the variables as they were before the state ran;
- Task: Arguments -> call -> Assign/Output (Output defaults to the result); Catch (first match)
  evaluates its own Assign/Output with `$states.errorOutput` {Error, Cause};
- Choice: first rule whose Condition is true, else Default; Map: Items, one run of ItemProcessor
  per item, `$states.result` = their outputs; Wait: counted, not waited;
- an expression that evaluates to nothing where a value is needed is an error
  (States.QueryEvaluationError), as in Step Functions.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from tests.cfn_eval import Evaluator
from tests.jsonata_engine import UNDEFINED, JsonataEngine, JsonataError

EXPRESSION = re.compile(r"^\{%(.*)%\}$", re.DOTALL)
MAX_TRANSITIONS = 2000


class ServiceError(Exception):
    """A scripted failure of a service call: `error` is the Step Functions error name."""

    def __init__(self, error: str, cause: str):
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


class ExecutionFailed(Exception):
    def __init__(self, error: str, cause: str):
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


def definition_from_template(template: dict, logical_id_part: str, imports: Optional[dict] = None) -> dict:
    """The state machine whose logical id contains `logical_id_part`, its tokens rendered."""
    (machine,) = [r for lid, r in template["Resources"].items() if r["Type"] == "AWS::StepFunctions::StateMachine" and logical_id_part in lid]
    text = Evaluator(template, imports=imports).value(machine["Properties"]["DefinitionString"])
    return json.loads(text)


def service_of(resource: str) -> str:
    """`arn:aws:states:::aws-sdk:ssm:getParameters` -> `ssm:getParameters`; `...:::sns:publish` -> `sns:publish`."""
    tail = resource.split(":::", 1)[1]
    return tail[len("aws-sdk:"):] if tail.startswith("aws-sdk:") else tail


class Services:
    """Scripted answers per `service:action`; every call is recorded as (name, arguments)."""

    def __init__(self) -> None:
        self._answers: dict[str, deque] = defaultdict(deque)
        self._defaults: dict[str, Callable[[dict], Any]] = {}
        self.calls: list[tuple[str, dict]] = []

    def answer(self, name: str, *results: Any) -> "Services":
        """Queue results (a dict/list/value, a ServiceError to raise, or a callable(arguments))."""
        self._answers[name].extend(results)
        return self

    def default(self, name: str, handler: Callable[[dict], Any]) -> "Services":
        self._defaults[name] = handler
        return self

    def __call__(self, name: str, arguments: dict) -> Any:
        self.calls.append((name, arguments))
        if self._answers[name]:
            result = self._answers[name].popleft()
        elif name in self._defaults:
            result = self._defaults[name]
        else:
            raise AssertionError(f"unexpected call {name}({json.dumps(arguments)[:300]})")
        if callable(result) and not isinstance(result, ServiceError):
            result = result(arguments)
        if isinstance(result, ServiceError):
            raise result
        return result

    def called(self, name: str) -> list[dict]:
        return [arguments for called, arguments in self.calls if called == name]


@dataclass
class Run:
    status: str
    output: Any = None
    error: Optional[str] = None
    cause: Optional[str] = None
    path: list[str] = field(default_factory=list)
    variables: dict = field(default_factory=dict)
    waits: int = 0


def expressions_in(value: Any) -> set[str]:
    """Every `{% ... %}` field of a definition (or any part of one)."""
    if isinstance(value, str):
        return {value.strip()} if EXPRESSION.match(value.strip()) else set()
    if isinstance(value, list):
        return set().union(*(expressions_in(item) for item in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(expressions_in(item) for item in value.values())) if value else set()
    return set()


class Interpreter:
    # Every expression any run has evaluated, for the tests that check none was left untried.
    evaluated: set[str] = set()

    def __init__(self, engine: JsonataEngine, definition: dict, services: Services, *, execution_id: str = "arn:aws:states:us-east-1:111122223333:execution:test:run-1") -> None:
        self.engine = engine
        self.definition = definition
        self.services = services
        self.context = {"Execution": {"Id": execution_id, "Name": execution_id.rsplit(":", 1)[-1], "StartTime": "2026-11-30T08:00:00.000Z"}, "StateMachine": {"Id": "test"}}

    # --- expressions ----------------------------------------------------------------------------

    def evaluate(self, value: Any, variables: dict, states: dict, *, required: bool = True) -> Any:
        if isinstance(value, str):
            match = EXPRESSION.match(value.strip())
            if not match:
                return value
            bindings = {**variables, "states": {**states, "context": self.context}}
            Interpreter.evaluated.add(value.strip())
            try:
                result = self.engine.evaluate(match.group(1), bindings)
            except JsonataError as error:
                raise ServiceError("States.QueryEvaluationError", str(error)) from None
            if result is UNDEFINED:
                if required:
                    raise ServiceError("States.QueryEvaluationError", f"the expression has no value: {value}")
                return UNDEFINED
            return result
        if isinstance(value, list):
            return [self.evaluate(item, variables, states) for item in value]
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                evaluated = self.evaluate(item, variables, states, required=False)
                if evaluated is not UNDEFINED:
                    out[key] = evaluated
            return out
        return value

    def _assign_and_output(self, spec: dict, variables: dict, states: dict, default_output: Any) -> Any:
        assigned = {name: self.evaluate(expr, variables, states) for name, expr in spec.get("Assign", {}).items()}
        output = self.evaluate(spec["Output"], variables, states) if "Output" in spec else default_output
        variables.update(assigned)
        return output

    # --- running --------------------------------------------------------------------------------

    def run(self, execution_input: Any) -> Run:
        variables: dict = {}
        run = Run(status="RUNNING", variables=variables)
        try:
            run.output = self._machine(self.definition, execution_input, variables, run)
            run.status = "SUCCEEDED"
        except ExecutionFailed as failed:
            run.status, run.error, run.cause = "FAILED", failed.error, failed.cause
        return run

    def _machine(self, machine: dict, data: Any, variables: dict, run: Run) -> Any:
        name = machine["StartAt"]
        for _ in range(MAX_TRANSITIONS):
            state = machine["States"][name]
            run.path.append(name)
            next_name, data = self._state(name, state, data, variables, run)
            if next_name is None:
                return data
            name = next_name
        raise AssertionError(f"more than {MAX_TRANSITIONS} transitions: {run.path[-20:]}")

    def _state(self, name: str, state: dict, data: Any, variables: dict, run: Run) -> tuple[Optional[str], Any]:
        kind = state["Type"]
        states = {"input": data}
        if kind == "Pass":
            return self._next(state), self._assign_and_output(state, variables, states, data)
        if kind == "Wait":
            run.waits += 1
            return self._next(state), self._assign_and_output(state, variables, states, data)
        if kind == "Succeed":
            return None, self.evaluate(state["Output"], variables, states) if "Output" in state else data
        if kind == "Fail":
            error = self.evaluate(state.get("Error", "States.Fail"), variables, states)
            cause = self.evaluate(state.get("Cause", ""), variables, states)
            raise ExecutionFailed(error, cause)
        if kind == "Choice":
            for rule in state.get("Choices", []):
                try:
                    matched = self.evaluate(rule["Condition"], variables, states)
                except ServiceError as error:
                    raise ExecutionFailed(error.error, error.cause) from None
                if matched is True:
                    return rule["Next"], self._assign_and_output(rule, variables, states, data)
                if matched is not False:
                    raise ExecutionFailed("States.QueryEvaluationError", f"{name}: condition is not a boolean: {matched!r}")
            if "Default" not in state:
                raise ExecutionFailed("States.NoChoiceMatched", name)
            return state["Default"], self._assign_and_output(state, variables, states, data)
        if kind in ("Task", "Map"):
            try:
                result = self._task(state, data, variables, run) if kind == "Task" else self._map(state, data, variables, run)
            except ServiceError as error:
                for catcher in state.get("Catch", []):
                    if "States.ALL" in catcher["ErrorEquals"] or error.error in catcher["ErrorEquals"]:
                        error_states = {"input": data, "errorOutput": {"Error": error.error, "Cause": error.cause}}
                        return catcher["Next"], self._assign_and_output(catcher, variables, error_states, error_states["errorOutput"])
                raise ExecutionFailed(error.error, error.cause) from None
            states = {"input": data, "result": result}
            try:
                return self._next(state), self._assign_and_output(state, variables, states, result)
            except ServiceError as error:
                raise ExecutionFailed(error.error, error.cause) from None
        raise AssertionError(f"state type {kind} is not interpreted")

    def _task(self, state: dict, data: Any, variables: dict, run: Run) -> Any:
        arguments = self.evaluate(state.get("Arguments", {}), variables, {"input": data})
        return self.services(service_of(state["Resource"]), arguments)

    def _map(self, state: dict, data: Any, variables: dict, run: Run) -> Any:
        items = self.evaluate(state["Items"], variables, {"input": data})
        if not isinstance(items, list):
            items = [items]
        results = []
        for item in items:
            inner = dict(variables)  # an iteration reads the outer variables; its own assignments stay inside
            try:
                results.append(self._machine(state["ItemProcessor"], item, inner, run))
            except ExecutionFailed as failed:
                raise ServiceError(failed.error, failed.cause) from None
        return results

    @staticmethod
    def _next(state: dict) -> Optional[str]:
        return None if state.get("End") else state["Next"]
