"""prefect.yaml's flows: every deployment's UI form can be filled without reading code.

The form the UI renders for a deployment is its flow's parameter schema (`parameter_schema`,
what `prefect deploy` sends), and the deployment's description is the flow's docstring. In
Prefect 3.9.1 the schema takes a parameter's description from the docstring's Google-style
`Args:` section only: the `description` of a `Field` inside `Annotated[...]` is dropped, while
its bounds survive. These tests fail when a parameter reaches the form without a description,
a type, its default or a bound the code declares. No server is needed.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from prefect import flow
from pydantic import Field

from tests.helpers import ROOT

TYPE_KEYS = ("type", "anyOf", "allOf", "$ref")
"""A schema property with none of these is untyped: the UI shows a bare JSON editor."""

BOUNDS = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
    "multiple_of": "multipleOf",
    "min_length": "minLength",
    "max_length": "maxLength",
    "pattern": "pattern",
}
"""A constraint's attribute in pydantic/annotated_types, and its JSON Schema keyword."""


def deployments() -> list[dict[str, Any]]:
    """prefect.yaml's deployments; safe_load resolves the file's merge keys (`<<`)."""
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def entrypoints() -> list[str]:
    return sorted({deployment["entrypoint"] for deployment in deployments()})


@functools.cache
def load(entrypoint: str) -> Any:
    """The flow at `entrypoint`, loaded as `prefect deploy` loads it, from the project root.

    Loading a script puts its directory first on sys.path and the script in sys.modules under
    its bare name (`callbacks`, `approval`...); both are undone so other tests see neither.
    """
    from prefect.flows import load_flow_from_entrypoint

    path, modules = list(sys.path), set(sys.modules)
    script = (ROOT / entrypoint.rpartition(":")[0]).resolve()
    try:
        with contextlib.chdir(ROOT):
            # No placeholder: a flow that does not import must fail here, not pass on a stub.
            return load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            file = getattr(sys.modules[name], "__file__", None)
            if file and Path(file).resolve() == script:
                del sys.modules[name]


def form(entrypoint: str) -> dict[str, Any]:
    """The parameter schema the UI renders as the deployment's form."""
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(load(entrypoint).fn).model_dump()


def signature(entrypoint: str) -> inspect.Signature:
    return inspect.signature(load(entrypoint).fn, eval_str=True)


def declared_bounds(annotation: Any) -> list[tuple[str, Any]]:
    """The bounds an annotation declares, as JSON Schema (keyword, value), nested ones too.

    `Annotated[int, Field(ge=1, le=500)]` declares minimum 1 and maximum 500; so does
    `list[Annotated[int, Field(ge=1)]]` for its items, and `Annotated[int | None, ...]`.
    """
    found: list[tuple[str, Any]] = []
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        for item in metadata:
            # A Field(...) keeps its constraints in .metadata; an annotated_types one is itself.
            for constraint in getattr(item, "metadata", [item]):
                for attribute, keyword in BOUNDS.items():
                    value = getattr(constraint, attribute, None)
                    if value is not None:
                        found.append((keyword, value))
        return found + declared_bounds(inner)
    for argument in typing.get_args(annotation):
        found += declared_bounds(argument)
    return found


def holds(schema: Any, keyword: str, value: Any) -> bool:
    """Whether `keyword: value` is in `schema`, at any depth (anyOf branches, array items)."""
    if isinstance(schema, dict):
        if keyword in schema and schema[keyword] == value:
            return True
        return any(holds(v, keyword, value) for v in schema.values())
    if isinstance(schema, list):
        return any(holds(v, keyword, value) for v in schema)
    return False


def test_prefect_yaml_lists_the_flows() -> None:
    assert "flows.ledger_sync:ledger_sync" in entrypoints()


@pytest.mark.parametrize("entrypoint", entrypoints())
def test_the_deployment_has_a_description_with_a_summary_line(entrypoint: str) -> None:
    flow = load(entrypoint)
    for deployment in deployments():
        if deployment["entrypoint"] == entrypoint:
            # prefect deploy uses the flow's docstring unless prefect.yaml sets one.
            description = (deployment.get("description") or flow.description or "").strip()
            assert description, f"{deployment['name']} ({entrypoint}) has no description"
    summary, *rest = (flow.description or "").splitlines()
    assert summary.strip(), f"{entrypoint}: the docstring does not open with a summary line"
    assert not rest or not rest[0].strip(), f"{entrypoint}: the summary is not one line"


@pytest.mark.parametrize("entrypoint", entrypoints())
def test_the_description_reads_as_markdown(entrypoint: str) -> None:
    """The UI renders the description as CommonMark: no stray code block, heading or rule.

    The usual accident: `Args:` entries indented four spaces after a blank line render as a
    code block; a line of dashes or `=` turns the paragraph above it into a heading.
    """
    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").parse(load(entrypoint).description or "")
    accidents = {"code_block", "heading_open", "hr", "html_block"}
    found = sorted({token.type for token in tokens} & accidents)
    assert not found, f"{entrypoint}: the description renders with {found}"


@pytest.mark.parametrize("entrypoint", entrypoints())
def test_every_parameter_has_a_description(entrypoint: str) -> None:
    properties = form(entrypoint)["properties"]
    undescribed = [
        name for name, prop in properties.items() if not (prop.get("description") or "").strip()
    ]
    assert not undescribed, (
        f"{entrypoint}: no description in the UI form for {undescribed} "
        "(document them in the flow docstring's Args: section)"
    )


@pytest.mark.parametrize("entrypoint", entrypoints())
def test_the_docstring_documents_the_real_parameters(entrypoint: str) -> None:
    from prefect.utilities.callables import parameter_docstrings

    documented = set(parameter_docstrings(inspect.getdoc(load(entrypoint).fn)))
    parameters = set(signature(entrypoint).parameters)
    assert not documented - parameters, (
        f"{entrypoint}: Args: documents parameters the flow does not have: "
        f"{sorted(documented - parameters)}"
    )


@pytest.mark.parametrize("entrypoint", entrypoints())
def test_every_parameter_has_a_type(entrypoint: str) -> None:
    properties = form(entrypoint)["properties"]
    untyped = [name for name, prop in properties.items() if not any(k in prop for k in TYPE_KEYS)]
    assert not untyped, f"{entrypoint}: untyped in the UI form: {untyped}"


@pytest.mark.parametrize("entrypoint", entrypoints())
def test_defaults_reach_the_form(entrypoint: str) -> None:
    schema = form(entrypoint)
    properties, required = schema["properties"], set(schema.get("required") or ())
    assert set(properties) == set(signature(entrypoint).parameters)
    for name, parameter in signature(entrypoint).parameters.items():
        if parameter.default is inspect.Parameter.empty:
            assert name in required, f"{entrypoint}: {name} has no default but is not required"
        else:
            assert "default" in properties[name], f"{entrypoint}: {name} lost its default"
            assert name not in required, f"{entrypoint}: {name} has a default but is required"


@pytest.mark.parametrize("entrypoint", entrypoints())
def test_declared_bounds_survive(entrypoint: str) -> None:
    properties = form(entrypoint)["properties"]
    lost = [
        f"{name}: {keyword}={value!r}"
        for name, parameter in signature(entrypoint).parameters.items()
        for keyword, value in declared_bounds(parameter.annotation)
        if not holds(properties[name], keyword, value)
    ]
    assert not lost, f"{entrypoint}: bounds missing from the UI form: {lost}"


def test_the_bounds_check_sees_what_the_code_declares() -> None:
    """The check above is not vacuous: ledger_sync's batch size is bounded, in the form too."""
    entrypoint = "flows/ledger_sync.py:ledger_sync"
    batch_size = signature(entrypoint).parameters["batch_size"]
    assert sorted(declared_bounds(batch_size.annotation)) == [("maximum", 500), ("minimum", 1)]
    prop = form(entrypoint)["properties"]["batch_size"]
    assert (prop["minimum"], prop["maximum"], prop["default"]) == (1, 500, 200)
    malformed = signature("flows/message_queue.py:produce_and_gather").parameters["malformed"]
    assert declared_bounds(malformed.annotation) == [("minimum", 0)]


@pytest.mark.parametrize(
    ("entrypoint", "name"),
    [
        ("flows.approval:approve_payment", "amount_eur"),
        ("flows.approval:approve_payment", "approval_above_eur"),
        ("flows.ledger_sync:ledger_sync", "approval_above_eur"),
    ],
)
def test_an_amount_of_eur_is_a_number_of_at_least_zero_in_the_form(
    entrypoint: str, name: str
) -> None:
    """Not "a number or any text" (pydantic's schema for Decimal): the form, and
    enforce_parameter_schema with it, refuse a negative or non-numeric amount."""
    from prefect.utilities.schema_tools import ValidationError, validate

    schema = form(entrypoint)
    prop = schema["properties"][name]
    numbers = [prop, *prop.get("anyOf", [])]
    number = next(option for option in numbers if option.get("type") == "number")
    assert number["minimum"] == 0, prop
    assert not any(option.get("type") == "string" for option in numbers), prop
    if "default" in prop and prop["default"] is not None:
        assert isinstance(prop["default"], int | float), prop["default"]
    required = {p: 1 for p in schema.get("required", []) if p != name}
    for bad in ("-5", "abc", -5):
        with pytest.raises(ValidationError):
            validate({**required, name: bad}, schema, raise_on_error=True)
    validate({**required, name: 1234.5}, schema, raise_on_error=True)


@flow
def _form(counted: Annotated[int, Field(ge=1, description="from the Field")] = 1, told: int = 2):
    """A form.

    Args:
      told: from the docstring
    """


def test_prefect_drops_a_field_description_inside_annotated() -> None:
    """Pins Prefect 3.9.1: `parameter_schema` (prefect/utilities/callables) takes descriptions
    from the docstring's `Args:` only, and drops a `Field(description=...)` inside `Annotated`.
    When this test fails, Prefect reads them: descriptions could move next to their bounds."""
    properties = _form.parameters.model_dump()["properties"]
    assert "description" not in properties["counted"] and properties["counted"]["minimum"] == 1
    assert properties["told"]["description"] == "from the docstring"


def _field_descriptions(function: Any) -> list[str]:
    """Parameters of `function` whose `Annotated[...]` carries a `Field(description=...)`."""
    hints = typing.get_type_hints(function, include_extras=True)
    found = []
    for name, hint in hints.items():
        stack = [hint]
        while stack:
            current = stack.pop()
            for meta in getattr(current, "__metadata__", ()):
                if getattr(meta, "description", None):
                    found.append(name)
            stack.extend(typing.get_args(current))
    return found


@pytest.mark.parametrize("entrypoint", entrypoints())
def test_each_parameter_is_described_once_in_the_docstring(entrypoint: str) -> None:
    """A description inside `Annotated` never reaches the form (pinned above): written there
    too, it would be a second copy that drifts from the docstring's."""
    flow = load(entrypoint)
    assert _field_descriptions(flow.fn) == []
