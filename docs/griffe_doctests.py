"""A Griffe extension for the API reference (mkdocs.yml loads it): p2p's docstrings show usage as
doctest lines (``>>> model = p2p.load("facades")  # doctest: +SKIP``) in running text. Markdown
would read ``run.log[-1]["g_l1"]`` in them as a link; this turns each run of ``>>>``/``...``
lines into a fenced ``pycon`` block and drops the doctest directives, which mean nothing to a
reader. The docstrings themselves stay as they are."""

import re

import griffe

DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")


def fence_doctests(text: str) -> str:
    out: list[str] = []
    in_block = False
    for line in text.splitlines():
        stripped = line.lstrip()
        is_doctest = stripped.startswith(">>>") or (in_block and stripped.startswith("..."))
        if is_doctest and not in_block:
            if out and out[-1].strip():
                out.append("")
            out.append("```pycon")
            in_block = True
        elif not is_doctest and in_block:
            out.append("```")
            in_block = False
            if line.strip():
                out.append("")
        out.append(DIRECTIVE.sub("", stripped) if is_doctest else line)
    if in_block:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
