"""A small evaluator of CloudFormation intrinsics, for the tests that ask "what would this deploy?".

It resolves a synthesized template the way CloudFormation would for given parameter values (the
serving record, in the tests): Conditions (Fn::Equals/Not/And/Or, Condition), Fn::If with
AWS::NoValue, Fn::Join/Select/Split/Sub/FindInMap, Ref to parameters and pseudo parameters.
What only exists at deploy time in another stack or resource (Fn::ImportValue, Fn::GetAtt, Ref to
a resource) becomes a readable placeholder, so two evaluations can be compared.
"""

from __future__ import annotations

import re
from typing import Any

NO_VALUE = object()
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "111122223333", "AWS::URLSuffix": "amazonaws.com",
          "AWS::StackName": "RagDev-Test", "AWS::StackId": "arn:aws:cloudformation:us-east-1:111122223333:stack/RagDev-Test/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"}


class Evaluator:
    def __init__(self, template: dict, parameters: dict[str, str] | None = None, imports: dict[str, str] | None = None) -> None:
        self.template = template
        self.parameters = {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}
        self.parameters.update(parameters or {})
        self.imports = imports or {}
        self._conditions: dict[str, bool] = {}

    # --- conditions -----------------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.value(self.template["Conditions"][name]))
        return self._conditions[name]

    # --- values ---------------------------------------------------------------------------------

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.value(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            handler = getattr(self, "_" + key.replace("::", "_").replace("Fn_", "fn_"), None) if (key.startswith("Fn::") or key in ("Ref", "Condition")) else None
            if handler is not None:
                return handler(arg)
        resolved = {key: self.value(item) for key, item in node.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _Ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        return f"<ref:{name}>"

    def _Condition(self, name: str) -> bool:
        return self.condition(name)

    def _fn_Equals(self, args: list) -> bool:
        left, right = (self.value(arg) for arg in args)
        return left == right

    def _fn_Not(self, args: list) -> bool:
        return not self.value(args[0])

    def _fn_And(self, args: list) -> bool:
        return all(self.value(arg) for arg in args)

    def _fn_Or(self, args: list) -> bool:
        return any(self.value(arg) for arg in args)

    def _fn_If(self, args: list) -> Any:
        name, when_true, when_false = args
        return self.value(when_true if self.condition(name) else when_false)

    def _fn_Join(self, args: list) -> str:
        separator, items = args
        return separator.join(str(item) for item in self.value(items))

    def _fn_Split(self, args: list) -> list:
        separator, source = args
        return str(self.value(source)).split(separator)

    def _fn_Select(self, args: list) -> Any:
        index, items = args
        items = self.value(items)
        index = int(self.value(index))
        if not 0 <= index < len(items):
            raise IndexError(f"Fn::Select cannot select nonexistent value at index {index} of {items}")
        return items[index]

    def _fn_ImportValue(self, name: Any) -> str:
        name = self.value(name)
        return self.imports.get(name, f"<import:{name}>")

    def _fn_GetAtt(self, args: Any) -> str:
        logical_id, attribute = args if isinstance(args, list) else args.split(".", 1)
        return f"<{logical_id}.{attribute}>"

    def _fn_FindInMap(self, args: list) -> Any:
        mapping, first, second = (self.value(arg) for arg in args)
        return self.template["Mappings"][mapping][first][second]

    def _fn_Sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.value(arg[1]))

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            return str(self._Ref(name) if "." not in name else self._fn_GetAtt(name))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    # --- the template ---------------------------------------------------------------------------

    def resources(self) -> dict[str, dict]:
        """{logical id: {"Type", "Properties"}} of the resources that would exist, properties resolved."""
        found = {}
        for logical_id, resource in self.template["Resources"].items():
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            found[logical_id] = {"Type": resource["Type"], "Properties": self.value(resource.get("Properties", {}))}
        return found
