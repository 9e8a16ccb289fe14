"""Export a bundle as a self-contained model-zoo zip: ``python -m monai_isl export-bundle NAME --out NAME.zip``.

The MONAI model zoo distributes bundles as zips, and a user who downloads one has ``monai`` but not ``monai_isl``.
So the zip carries the code its configs need: the ``monai_isl`` package goes in as ``scripts/monai_isl`` (the
zoo's place for a bundle's own code) and the exported configs import it from there::

    $import monai_isl              ->  $import scripts.monai_isl as monai_isl
    $import monai_isl.data         ->  $import scripts.monai_isl.data
    _target_: monai_isl.X          ->  _target_: scripts.monai_isl.X

Every ``$monai_isl....`` expression keeps working through the alias. Under ``scripts`` the code never clashes with
another installed ``monai_isl``, and MONAI Label, which reloads ``scripts*`` modules around every call, always runs
the copy of the bundle it serves.

The configs are parsed (their imports resolved) before MONAI puts the bundle folder on ``sys.path``, so the
unzipped bundle is run from its own folder, as every zoo bundle is: ``python -m`` puts the current folder first on
``sys.path``. From elsewhere, put the bundle folder on ``PYTHONPATH`` and pass ``--bundle_root``.

Left out: trained weights (``models/``: the zoo refuses files over 25 MB; ``large_files.yml`` says where they go,
``include_weights=True`` adds ``models/model.pt`` for local use, e.g. MONAI Label), and run outputs (``runs/``,
``eval/``, ``predictions/``), caches and hidden files.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path

from . import bundle as bundle_utils

logger = logging.getLogger(__name__)

ZOO_MAX_FILE_BYTES = 25 * 2**20
"""The model zoo refuses bundle files larger than this (weights go in ``large_files.yml``)."""

PACKAGE_DIR = Path(__file__).resolve().parent
VENDORED = "scripts.monai_isl"
EXCLUDED_DIRS = {"models", "runs", "eval", "predictions", "__pycache__"}
# a fixed timestamp: exporting the same files twice gives the same zip
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)

_IMPORT_PACKAGE = re.compile(r"\$import monai_isl(?=\s*$|\s*#|\s*['\"])", re.MULTILINE)
_IMPORT_SUBMODULE = re.compile(r"\$import monai_isl\.")
_TARGET = re.compile(r"(['\"]?_target_['\"]?\s*:\s*['\"]?)monai_isl\.")


def rewrite_config(text: str) -> str:
    """The text of a bundle config (YAML or JSON) with its ``monai_isl`` imports and targets pointing at
    ``scripts.monai_isl``; comments and layout are kept."""
    text = _IMPORT_PACKAGE.sub(f"$import {VENDORED} as monai_isl", text)
    text = _IMPORT_SUBMODULE.sub(f"$import {VENDORED}.", text)
    return _TARGET.sub(rf"\g<1>{VENDORED}.", text)


def _strings(node: object, key: str = "") -> list[tuple[str, str]]:
    """Every ``(key, string)`` pair in a parsed config (key ``""`` for list items)."""
    if isinstance(node, str):
        return [(key, node)]
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in _strings(v, str(k))]
    if isinstance(node, list):
        return [pair for v in node for pair in _strings(v)]
    return []


def check_exported_config(path: Path, text: str, base: str | None = None) -> None:
    """Check that a rewritten config no longer needs an installed ``monai_isl``.

    ``base``: for an overlay (``evaluate.yaml``, ``multi_gpu_train.yaml``), the rewritten text of the config it is
    loaded on top of (``train.yaml``), whose imports its expressions share.

    Raises:
        ValueError: a ``_target_`` or an import still names ``monai_isl``, or an expression uses ``monai_isl``
            without the ``$import scripts.monai_isl as monai_isl`` that binds the name; the message names the file.
    """
    import yaml

    parsed = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    strings = _strings(parsed)
    alias = f"$import {VENDORED} as monai_isl"
    base_strings = _strings(yaml.safe_load(base)) if base else []
    aliased = any(s.strip() == alias for _, s in strings + base_strings)
    for key, value in strings:
        if key == "_target_" and value.startswith("monai_isl."):
            raise ValueError(f"{path}: _target_ '{value}' still needs an installed monai_isl")
        if value.startswith("$") and re.search(r"\bimport monai_isl\b|\bfrom monai_isl\b", value):
            raise ValueError(f"{path}: '{value}' still imports an installed monai_isl")
        if value.startswith("$") and re.search(r"(?<![\w.])monai_isl\.", value) and not aliased:
            raise ValueError(
                f"{path}: '{value}' uses monai_isl but the config has no '$import monai_isl' to point at the "
                "bundle's scripts/monai_isl; add it to the config's imports"
            )


def bundle_files(root: Path, include_weights: bool = False) -> list[Path]:
    """The bundle's own files to ship, relative to ``root``, sorted."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.parts[0] in EXCLUDED_DIRS or "__pycache__" in rel.parts or path.suffix == ".pyc":
            continue
        files.append(rel)
    if include_weights:
        weights = root / "models" / "model.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"--include_weights: no trained model '{weights}'; train the bundle first")
        files.append(Path("models") / "model.pt")
    return files


def package_files() -> list[Path]:
    """The ``monai_isl`` package's source files, relative to the package folder, sorted."""
    return sorted(
        p.relative_to(PACKAGE_DIR)
        for p in PACKAGE_DIR.rglob("*.py")
        if "__pycache__" not in p.parts and not any(part.startswith(".") for part in p.relative_to(PACKAGE_DIR).parts)
    )


def overlay_base(config: str) -> str | None:
    """The config an overlay is loaded on top of (``evaluate.yaml`` -> ``train.yaml``), from
    :data:`monai_isl.bundle.WORKFLOW_CONFIGS`; None for a config that stands alone."""
    for files in bundle_utils.WORKFLOW_CONFIGS.values():
        if config in files[1:]:
            return files[0]
    return None


def workflow_commands(prefix: str = "configs") -> dict[str, str]:
    """The ``--config_file`` argument of each workflow, in the list form for overlays, with config paths under
    ``prefix``: what an exported bundle's users type (``"['configs/train.yaml','configs/evaluate.yaml']"``)."""
    commands = {}
    for workflow in bundle_utils.WORKFLOW_CONFIGS:
        paths = [f"{prefix}/{Path(p).name}" for p in bundle_utils.workflow_configs(".", workflow)]
        commands[workflow] = paths[0] if len(paths) == 1 else '"[' + ",".join(f"'{p}'" for p in paths) + ']"'
    return commands


SCRIPTS_INIT = '''"""Code this bundle's configs import: a copy of the monai_isl package (scripts.monai_isl), exported by
``python -m monai_isl export-bundle``. Run the bundle from its own folder so that ``scripts`` is importable."""
'''


def export_bundle(
    name: str,
    out: str | None = None,
    bundle_root: str | None = None,
    include_weights: bool = False,
) -> str:
    """Write bundle ``name`` as a self-contained zip that runs where ``monai_isl`` is not installed.

    The zip holds one folder ``<name>/`` (as zoo downloads do): the bundle's configs (``monai_isl`` imports
    pointed at ``scripts.monai_isl``), docs, LICENSE and ``large_files.yml``, plus ``scripts/monai_isl`` (this
    package). Unzip it and run from that folder, e.g.
    ``python -m monai.bundle run --config_file configs/train.yaml --dataset_dir DATA``, and evaluate with the
    overlay on top of train.yaml:
    ``python -m monai.bundle run --config_file "['configs/train.yaml','configs/evaluate.yaml']" --dataset_dir DATA``
    (:func:`workflow_commands`).

    Args:
        name: bundle name (``dapi_isl``, ``cellmask_isl``, ``nucleus_seg``, ``cell_instance_seg``).
        out: the zip to write (default ``<name>.zip`` in the current folder).
        bundle_root: the bundle folder (default: found as the configs find it, e.g. ``bundles/<name>``).
        include_weights: also ship ``models/model.pt`` (not for the zoo, which refuses files over 25 MB).

    Returns:
        The path of the zip.

    Raises:
        FileNotFoundError: no such bundle, or no ``models/model.pt`` with ``include_weights``.
        ValueError: a config would still need an installed ``monai_isl`` after the rewrite.
    """
    root = Path(bundle_root or bundle_utils.bundle_root(name)).resolve()
    meta = root / "configs" / "metadata.json"
    if not meta.is_file():
        raise FileNotFoundError(f"'{root}' is not a bundle: no configs/metadata.json")
    version = json.loads(meta.read_text()).get("version", "?")
    target = Path(out or f"{name}.zip").resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[str, bytes]] = []
    files = bundle_files(root, include_weights)
    rewritten = {
        rel: rewrite_config((root / rel).read_text())
        for rel in files
        if rel.parts[0] == "configs" and rel.suffix in (".yaml", ".yml", ".json")
    }
    for rel in files:
        if rel in rewritten:
            base = overlay_base(rel.name)
            check_exported_config(rel, rewritten[rel], rewritten.get(Path("configs") / base) if base else None)
            data = rewritten[rel].encode()
        else:
            data = (root / rel).read_bytes()
        entries.append((f"{name}/{rel.as_posix()}", data))
    entries.append((f"{name}/scripts/__init__.py", SCRIPTS_INIT.encode()))
    for rel in package_files():
        entries.append((f"{name}/scripts/monai_isl/{rel.as_posix()}", (PACKAGE_DIR / rel).read_bytes()))
    large = [(arcname, len(data)) for arcname, data in entries if len(data) > ZOO_MAX_FILE_BYTES]
    for arcname, size in large:
        logger.warning("%s is %.0f MB: the model zoo refuses files over 25 MB", arcname, size / 2**20)
    tmp = target.with_name(f".{target.name}.tmp")  # written whole, then renamed: never a half zip
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for arcname, data in entries:
                info = zipfile.ZipInfo(arcname, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {name} {version} ({len(entries)} files) to {target}")
    print(f"run it from the unzipped folder {name}/: python -m monai.bundle run --config_file X --dataset_dir DATA")
    for workflow, config in workflow_commands().items():
        print(f"  {workflow}: --config_file {config}")
    return str(target)
