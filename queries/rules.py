"""The rules that several queries share, each written once here as the Cypher text every query that
applies it must use (``tests/fast/test_query_files.py`` refuses a file that writes one another way),
so a circuit, a component or a contrast cannot drift apart on what a member or an edge is. The
query files keep the text itself, not a reference, so that each still pastes into Neo4j Browser.

A rule is its accepted forms, in which ``V`` stands for the query's own variable (one variable per
form), and a pattern that finds every place a query applies it, in a form or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    forms: tuple[str, ...]
    finder: str

    def misuses(self, text: str) -> list[str]:
        """The places ``text`` (Cypher, its ``//`` comment lines left out) applies this rule in none of its forms."""
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        spans = [m.span() for form in self.forms for m in re.finditer(_with_variable(form), text)]
        return [
            m.group()
            for m in re.finditer(self.finder, text)
            if not any(start <= m.start() and m.end() <= end for start, end in spans)
        ]


def _with_variable(form: str) -> str:
    """``form`` as a regex whose ``V``s are one Cypher variable (the first binds it, the others repeat it)."""
    first, *rest = form.split("V")
    return first + (r"(?P<v>\w+)" + "(?P=v)".join(rest) if rest else "")


#: A channel is a member of a slice's circuit when its exact ablation effect there (``ACTIVE_ON.ablation``,
#: nats) is at least ``$min_effect``, and is not when below; where ``$min_effect`` may be null, null takes
#: every channel.
CIRCUIT_MEMBER = Rule(
    (
        r"V\.ablation >= \$min_effect",
        r"V\.ablation < \$min_effect",
        r"V\.ablation >= coalesce\(\$min_effect, V\.ablation\)",
    ),
    r"[\w.$]+\s*[<>=]+\s*(?:coalesce\()?\$min_effect|\$min_effect\s*[<>=]+",
)
#: An edge's effect in a circuit: its exact patched effect where it was measured, else its attribution.
EDGE_EFFECT = Rule((r"coalesce\(V\.patched, V\.attribution\)",), r"coalesce\([^()]*patched[^()]*\)")
#: A component's edges: a score at least ``$min_share`` of the largest such score among the checkpoint's edges.
LEAST_SHARE = Rule((r"\$min_share \* max\(V\[coalesce\(\$by, 'attribution'\)\]\)",), r"\$min_share\s*\*")

RULES = {"circuit member": CIRCUIT_MEMBER, "edge effect": EDGE_EFFECT, "least share": LEAST_SHARE}
