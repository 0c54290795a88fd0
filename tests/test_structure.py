"""The package structure: a pure core, one-way dependencies, small modules."""

import ast
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("sdm_tf", "pipelines", "launch")


def imports_of(path: pathlib.Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def test_core_is_plain_python():
    # In a fresh interpreter: importing the core loads none of the heavy frameworks.
    code = (
        "import sys; import sdm_tf.core.features, sdm_tf.core.events, sdm_tf.core.sessions,"
        " sdm_tf.core.history_rules, sdm_tf.core.split_files;"
        "print(sorted(m for m in ('tensorflow', 'apache_beam', 'fastapi', 'numpy', 'faiss')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_dependencies_run_one_way():
    for path in modules("sdm_tf/core"):
        bad = {m for m in imports_of(path) if m.startswith(("pipelines", "launch"))}
        bad |= {m for m in imports_of(path) if m.startswith("sdm_tf.") and ".core" not in m}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
    for path in modules("sdm_tf"):
        bad = {m for m in imports_of(path) if m.startswith(("pipelines", "launch"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
    for path in modules("pipelines"):
        bad = {
            m
            for m in imports_of(path)
            if m.startswith(("sdm_tf.", "launch")) and not m.startswith("sdm_tf.core")
        }
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for pkg in PACKAGES
        for p in modules(pkg)
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long


def test_no_line_over_100_characters():
    # black wraps code at 100 but leaves long strings, comments and `fmt: skip` blocks alone.
    long = [
        f"{p.relative_to(ROOT)}:{i}"
        for pkg in (*PACKAGES, "benchmarks", "tests")
        for p in modules(pkg)
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if len(line) > 100
    ]
    assert not long


def test_every_install_gets_one_faiss_wheel_at_most():
    # faiss-cpu and faiss-gpu write the same `faiss` package: together, the last one installed
    # wins file by file, and uninstalling one deletes the other's files.
    tree = ast.parse((ROOT / "setup.py").read_text())
    lit = {
        t.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name) and t.id in ("INSTALL_REQUIRES", "EXTRAS")
    }

    def faiss_of(reqs):
        return {re.split(r"[<>=\[ ;]", r)[0] for r in reqs} & {"faiss-cpu", "faiss-gpu"}

    assert not faiss_of(lit["INSTALL_REQUIRES"])
    assert faiss_of(lit["EXTRAS"]["cpu"]) == {"faiss-cpu"}
    assert faiss_of(lit["EXTRAS"]["gpu"]) == {"faiss-gpu"}
    others = {name: faiss_of(reqs) for name, reqs in lit["EXTRAS"].items()}
    assert not any(v for name, v in others.items() if name not in ("cpu", "gpu"))  # [gpu,test]
    assert 'install -q -e ".[cpu,test]"' in (ROOT / "Makefile").read_text()
