"""Reading a grid spec file: the strict YAML loader (only true / false are booleans, 1e-6 is a float, a key
given twice or nesting deeper than MAX_DEPTH is an error) used by rft_fast.grid.spec.read_yaml."""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_DEPTH = 32  # YAML nesting levels a spec may use (a spec needs 4)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader for specs: 1e-6 is a float (YAML 1.1 wants 1.0e-6; users write both); only true / false are
    booleans (YAML 1.1's yes / no / on / off stay strings, which a boolean field then refuses); a key given twice
    in one mapping and nesting deeper than MAX_DEPTH are errors (PyYAML keeps the last value, and recurses)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key_node.value!r} given twice in one mapping", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)$"), list("-+0123456789.")
)
