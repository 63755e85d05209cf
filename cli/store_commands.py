"""Character store commands: register, add-refs, list, show, remove, identify, score, export,
import, reembed and verify. Each takes `--store PATH` (or $CASTKEEP_STORE) and `--json`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..errors import StoreError
from ..utils import no_progress, progress
from .common import (
    device_option,
    domain_option,
    echo,
    emit,
    json_option,
    model_options,
    scorer_option,
    terminal_text,
    verdict_text,
)


class StoreLocation(click.ParamType):
    """A store folder (a Path), or a PostgreSQL store's `postgresql://` URL (kept as text)."""

    name = "PATH|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        text = str(value)
        return text if text.startswith(("postgresql://", "postgres://")) else Path(text)


store_option = click.option(
    "--store", "store_path", type=StoreLocation(), default=None, envvar="CASTKEEP_STORE",
    show_envvar=True, help="Store folder (default: the user data folder, e.g. ~/.local/share/castkeep/store), "
                           "or a team store's postgresql://USER@HOST:PORT/DB URL.")
strict_option = click.option(
    "--strict", is_flag=True,
    help="All or nothing: refuse the call if any photo fails the quality gate (default: leave it out, warn).")
face_option = click.option(
    "--face", "face_index", type=click.IntRange(min=0), default=None,
    help="Use this face (0 = largest) of every photo; or write a single photo as PHOTO:N.")


def store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return store_option(model_options(json_option(func)))


@contextmanager
def open_store(store_path: Path | None, models: str | None = None, device: str = "cpu",
               create: bool = False) -> Iterator[Any]:
    from ..identity.store import Store

    with Store.open(store_path, models=models, device=device, create=create) as store:
        yield store


def _warn(character: Any) -> None:
    for message in character.warnings:
        echo(f"warning: {message}", err=True)


def _summary(character: Any) -> str:
    baseline = character.baseline.get("mean")
    base = f", baseline {baseline:.2f}" if baseline is not None else ""
    flagged = sum(r.flagged for r in character.references)
    flag = f", {flagged} flagged" if flagged else ""
    return f"{character.name}: {len(character.references)} reference(s){base}{flag}"


def one_line(text: str) -> str:
    """A stored string (description, tag, file name: from users, file names or imports) inside a line of text
    output: its control characters and newlines escaped, so it cannot drive the terminal or forge lines."""
    return terminal_text(str(text), one_line=True)


def _bar(label: str) -> Callable[[Any], Any]:
    return lambda items: progress(items, label=label, total=len(items))


@click.command()
@click.argument("name")
@click.argument("images", nargs=-1, required=True)
@click.option("--description", default="", help="Free text kept with the character.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--force", is_flag=True,
              help="Keep photos that fail the quality gate or look like another person (flagged).")
@strict_option
@face_option
@store_options
def register(name: str, images: tuple[str, ...], description: str, tags: tuple[str, ...], force: bool,
             strict: bool, face_index: int | None, store_path: Path | None, models: str | None, device: str,
             as_json: bool) -> None:
    """Register character NAME from 1–13 reference photos IMAGES (one person per photo)."""
    with open_store(store_path, models, device, create=True) as store:
        character = store.register(name, list(images), description=description, tags=tags, force=force,
                                   strict=strict, face=face_index, progress=_bar("embedding"))
        _warn(character)
        emit(character.to_dict(), as_json, lambda _: f"registered {_summary(character)}")


@click.command("add-refs")
@click.argument("name")
@click.argument("images", nargs=-1, required=True)
@click.option("--force", is_flag=True,
              help="Keep photos that fail the quality gate or look like another person (flagged).")
@strict_option
@face_option
@store_options
def add_refs(name: str, images: tuple[str, ...], force: bool, strict: bool, face_index: int | None,
             store_path: Path | None, models: str | None, device: str, as_json: bool) -> None:
    """Add reference photos IMAGES to character NAME (its vector and baseline are refit)."""
    with open_store(store_path, models, device) as store:
        character = store.add_refs(name, list(images), force=force, strict=strict, face=face_index,
                                   progress=_bar("embedding"))
        _warn(character)
        emit(character.to_dict(), as_json, lambda _: f"updated {_summary(character)}")


@click.command("list")
@store_options
def list_characters(store_path: Path | None, models: str | None, device: str, as_json: bool) -> None:
    """List the stored characters."""
    with open_store(store_path, models, device) as store:
        characters = store.characters()
    rows = [{"name": c.name, "references": len(c.references), "baseline": c.baseline.get("mean"),
             "tags": c.tags, "description": c.description, "created_at": c.created_at}
            for c in characters]

    def text(_: Any) -> str:
        if not rows:
            return "no characters (register one with `castkeep register NAME PHOTO...`)"
        width = max(len(one_line(r["name"])) for r in rows)
        return "\n".join(f"{one_line(r['name']):<{width}}  {r['references']:>2} ref(s)"
                         + (f"  baseline {r['baseline']:.2f}" if r["baseline"] is not None else "")
                         + (f"  [{', '.join(map(one_line, r['tags']))}]" if r["tags"] else "") for r in rows)

    emit(rows, as_json, text)


@click.command()
@click.argument("name")
@store_options
def show(name: str, store_path: Path | None, models: str | None, device: str, as_json: bool) -> None:
    """Show character NAME: references, their quality and pose, and which yaw ranges are covered."""
    with open_store(store_path, models, device) as store:
        character = store.get(name)
    data = character.to_dict()

    def text(_: Any) -> str:
        lines = [one_line(character.name)]
        if character.description:
            lines.append(f"  description: {one_line(character.description)}")
        if character.tags:
            lines.append(f"  tags: {', '.join(map(one_line, character.tags))}")
        lines.append(f"  model: {character.fingerprint}   created: {character.created_at}")
        lines.append("  embedding spaces (reembed --models PACK adds one):")
        for space in data["spaces"]:
            lines.append(f"    {space['pack']:<16} {space['dim']:>4}-d  {space['references']}/"
                         f"{len(character.references)} reference(s)  {'primary  ' if space['primary'] else ''}"
                         f"{space['fingerprint']}")
        base = character.baseline
        if base.get("mean") is not None:
            lines.append(f"  baseline (leave-one-out cosine): mean {base['mean']:.2f}, "
                         f"min {base['min']:.2f}, max {base['max']:.2f}")
        coverage = data["pose_coverage"]
        lines.append("  pose coverage (head yaw; right = turned toward the image's right): "
                     + ", ".join(f"{k} {v}" for k, v in coverage["bins"].items())
                     + (f"  (missing: {', '.join(coverage['missing'])})" if coverage["missing"] else ""))
        lines.append(f"  references ({len(character.references)}):")
        for ref in character.references:
            yaw = "?" if ref.yaw is None else f"{ref.yaw:+.0f}°"  # a pose may lack its angles
            flag = "  FLAGGED" if ref.flagged else ""
            crop = "" if ref.has_crop else "  (no stored face crop)"
            lines.append(f"    quality {ref.quality:.2f}  yaw {yaw}  {one_line(ref.source_path)}"
                         f"{'' if not ref.face_index else f':{ref.face_index}'}{flag}{crop}")
        return "\n".join(lines)

    emit(data, as_json, text)


@click.command()
@click.argument("name")
@store_options
def remove(name: str, store_path: Path | None, models: str | None, device: str, as_json: bool) -> None:
    """Remove character NAME and its references from the store."""
    with open_store(store_path, models, device) as store:
        removed = store.remove(name)
    emit({"removed": removed}, as_json, f"removed {one_line(removed)}")


images_argument = click.argument("images", nargs=-1, required=True)
keep_going_option = click.option(
    "--keep-going", is_flag=True,
    help="With several images: report an image that cannot be read or has no face, and go on (exit 4 at the "
         "end) instead of stopping there.")


def _judge_images(images: tuple[str, ...], keep_going: bool, store: Any, judge: Callable[..., Any],
                  face_index: int | None, scorer: str, domain: str) -> list[Any]:
    """Every image judged in one batch, as `ImageJudgement`s; the first image error stops the batch unless
    `keep_going` (a single image's error always does: it is that command's answer)."""
    from ..identity.store_scoring import judge_many
    from .common import expand_images

    paths = expand_images(images)
    results = []
    for result in judge_many(store, paths, judge, face=face_index, scorer=scorer, domain=domain,
                             progress=progress if len(paths) > 3 else no_progress):
        if result.error is not None and not (keep_going and len(paths) > 1):
            raise result.error
        results.append(result)
    return results


def _emit_batch(results: list[Any], as_json: bool, one: Callable[[Any], Any],
                single_text: Callable[[Any], str], line: Callable[[Any], str]) -> None:
    """One image: its answer as the single-image command always printed it. Several: {"images": [...]}, one
    line each; exit 4 when any image failed (with --keep-going)."""
    if len(results) == 1 and results[0].error is None:
        emit(one(results[0]), as_json, single_text)
        return
    rows = [{"image": r.image, "error": str(r.error)} if r.error is not None
            else {"image": r.image, "domain": r.domain, **_result_dict(r.result)} for r in results]

    def text(_: Any) -> str:
        return "\n".join(f"error: {r.error}" if r.error is not None else f"{r.image}: {line(r)}" for r in results)

    emit({"images": rows}, as_json, text)
    if any(r.error is not None for r in results):
        raise SystemExit(4)


def _result_dict(result: Any) -> dict[str, Any]:
    if isinstance(result, list):
        return {"matches": [m.to_dict() for m in result]}
    return dict(result.to_dict())


@click.command()
@images_argument
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many characters to list.")
@click.option("--fpir", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01, show_default=True,
              help="Target false-positive identification rate: the share of faces of people not stored that "
                   "may still be called someone. The verdict threshold rises with the number of characters.")
@face_option
@scorer_option
@domain_option
@keep_going_option
@store_options
def identify(images: tuple[str, ...], k: int, fpir: float, face_index: int | None, scorer: str, domain: str,
             keep_going: bool, store_path: Path | None, models: str | None, device: str, as_json: bool) -> None:
    """The stored characters closest to the face in each of IMAGES (files or folders), best first (--json: a
    list of matches, each with its `open_set` threshold; with several images, {"images": [...]}). "same
    person" is judged at the open-set threshold for the store's size. dlib and fused re-rank ArcFace's
    nearest characters (at least 5), described from their stored face crops. Several images are detected
    and embedded as one batch, with a progress bar."""
    from ..identity.open_set import open_set_threshold
    from ..identity.store_scoring import identify as identify_face

    def judge(store: Any, image: Any, **kwargs: Any) -> Any:
        return identify_face(store, image, k=k, fpir=fpir, **kwargs)

    with open_store(store_path, models, device) as store:
        open_set_threshold(scorer, "photo", len(store), fpir)  # a bad --fpir fails before any image is read
        results = _judge_images(images, keep_going, store, judge, face_index, scorer, domain)

    def single(_: Any) -> str:
        return _matches_text([m.to_dict() for m in results[0].result], results[0].domain)

    def line(result: Any) -> str:
        best = result.result[0].to_dict() if result.result else None
        if best is None:
            return "no characters stored"
        return (f"{best['name']} (P(same) {best['probability']:.2f}, "
                f"{'same person' if best['same'] else 'not the same person'})")

    _emit_batch(results, as_json, lambda r: [m.to_dict() for m in r.result], single, line)


def _matches_text(rows: list[dict[str, Any]], domain: str | None) -> str:
    if not rows:
        return "no characters stored"
    width = max(len(r["name"]) for r in rows)
    metric = {"cosine": "cosine", "euclidean distance": "distance"}.get(rows[0]["metric"], rows[0]["metric"])
    lines = [f"{i + 1}. {r['name']:<{width}}  {metric} {r['score']:.3f}  P(same) "
             f"{r['probability']:.2f}  {'same person' if r['same'] else '-'}" for i, r in enumerate(rows)]
    rule = rows[0]["open_set"]
    how = (f"for {rule['characters']} character(s) at FPIR {rule['target_fpir']:.2%}" if rule["fitted"]
           else f"= 1:1: no impostor tail fitted for {rows[0]['scorer']} in {domain}")
    return "\n".join(lines + [f"verdict at the open-set {metric} threshold {rule['threshold']:.3f} ({how}; "
                              f"1:1 threshold {rule['one_to_one_threshold']:.3f})"])


@click.command()
@images_argument
@click.option("--character", "-c", "name", required=True, help="The character to score against.")
@face_option
@scorer_option
@domain_option
@keep_going_option
@store_options
def score(images: tuple[str, ...], name: str, face_index: int | None, scorer: str, domain: str, keep_going: bool,
          store_path: Path | None, models: str | None, device: str, as_json: bool) -> None:
    """Score the face in each of IMAGES (files or folders) against a character: the scorer's number,
    P(same person), verdict, leakage. dlib and fused describe the character's stored face crops (or its
    reference photos, sha256-checked, for references stored before crops were kept). Several images are
    detected and embedded as one batch, with a progress bar (--json: {"images": [...]})."""
    from ..identity.store_scoring import score as score_face

    def judge(store: Any, image: Any, **kwargs: Any) -> Any:
        return score_face(store, image, name, **kwargs)

    with open_store(store_path, models, device) as store:
        store.get(name)  # an unknown character fails before any image is read
        results = _judge_images(images, keep_going, store, judge, face_index, scorer, domain)

    def single(data: Any) -> str:
        result = results[0].result
        lines = [f"{data['name']}:"] + [f"  {verdict_text(s)}" for s in data["scores"].values()]
        if result.baseline_mean is not None:
            lines.append(f"  character baseline (leave-one-out mean cosine): {result.baseline_mean:.2f}")
        if result.closest_other is not None:
            other = result.closest_other
            lines.append(f"  closest other character: {other.name} ({other.result.metric} {other.result.score:.3f}, "
                         f"P(same) {other.result.probability:.2f})"
                         + ("  <- identity leakage: closer to another character" if result.leakage else ""))
        return "\n".join(lines)

    def line(result: Any) -> str:
        data = result.result.to_dict()
        return (f"P(same) {data['probability']:.2f} ({data['scorer']}), "
                f"{'same person' if data['same'] else 'not the same person'}"
                + ("; leakage: closer to " + data["closest_other"]["name"] if data["leakage"] else ""))

    _emit_batch(results, as_json, lambda r: {"image": r.image, **r.result.to_dict()}, single, line)


@click.command()
@click.argument("name")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True,
              help="Replace OUT even if it is an existing file that is not a castkeep export.")
@store_options
def export(name: str, out: Path, overwrite: bool, store_path: Path | None, models: str | None, device: str,
           as_json: bool) -> None:
    """Write character NAME to OUT (a .castkeep.json file, or a folder): JSON + embeddings and face crops,
    not the original photos. Never writes inside the store's folder."""
    with open_store(store_path, models, device) as store:
        written = store.export(name, out, overwrite=overwrite)
    emit({"name": name, "file": str(written)}, as_json, f"exported {name} to {written}")


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", "new_name", default=None, help="Store the character under this name instead.")
@store_options
def import_character(file: Path, new_name: str | None, store_path: Path | None, models: str | None,
                     device: str, as_json: bool) -> None:
    """Add a character from an exported FILE (it must come from the same model pack)."""
    with open_store(store_path, models, device, create=True) as store:
        character = store.import_file(file, name=new_name)
        _warn(character)
    emit(character.to_dict(), as_json, f"imported {_summary(character)}")


@click.command()
@click.argument("name", required=False)
@click.option("--all", "all_characters", is_flag=True, help="Every character of the store.")
@click.option("--models", "models", metavar="PACK", required=True,
              help="The model pack whose embedding space to add: an insightface pack name (e.g. "
                   "buffalo_l) or a folder of .onnx files.")
@device_option
@store_option
@json_option
def reembed(name: str | None, all_characters: bool, models: str, device: str, store_path: Path | None,
            as_json: bool) -> None:
    """Add model pack PACK's embedding space to character NAME (or --all) from the stored face crops.

    References stored without a crop (before crops were kept) are re-read from their original photo
    when it is unchanged; the rest are reported, and the character keeps its other spaces.
    """
    if (name is None) != all_characters:  # neither, or both
        raise click.UsageError("give a character NAME or --all (not both)")
    with open_store(store_path, None, device) as store:
        report = store.reembed(name, models=models, progress=_bar("embedding"))
    for outcome in report.characters:
        for missing in outcome.missing:
            echo(f"warning: {outcome.name}: {one_line(missing['source_path'])} not embedded: {missing['reason']}",
                 err=True)

    def text(_: Any) -> str:
        lines = [f"space {report.pack} ({report.fingerprint}):"]
        for c in report.characters:
            done = c.embedded + c.already
            how = f"{c.from_crops} from crops, {c.from_photos} from photos" if c.embedded else "nothing new"
            lines.append(f"  {c.name}: {done}/{c.references} reference(s) embedded ({how})"
                         + ("" if c.complete else f", {len(c.missing)} missing"))
        return "\n".join(lines) if report.characters else "no characters"

    emit(report.to_dict(), as_json, text)
    empty = [c.name for c in report.characters if c.embedded + c.already == 0]
    if empty:
        raise StoreError(f"no reference of {', '.join(empty)} could be embedded with {report.pack} (no stored face "
                         f"crop and no unchanged original photo): add new photos with add-refs")


@click.command()
@click.option("--index", "index_kind", type=click.Choice(["exact", "hnsw", "ivf"]), default=None,
              help="Switch the store's search index: exact (flat inner product) or approximate "
                   "(hnsw, ivf) for stores with very many characters; it is rebuilt now.")
@store_options
def verify(index_kind: str | None, store_path: Path | None, models: str | None, device: str,
           as_json: bool) -> None:
    """Check the store's integrity; a missing, stale or tampered index is rebuilt."""
    with open_store(store_path, models, device) as store:
        if index_kind is not None:
            store.set_index_kind(index_kind)
        report = store.verify()

    def text(r: dict[str, Any]) -> str:
        index = r["index"]
        lines = [f"{'ok' if r['ok'] else 'PROBLEMS'}: {r['characters']} character(s), {r['references']} "
                 f"reference(s), generation {r['generation']}",
                 f"index ({index['kind']}): {index['state']}" + (", rebuilt" if index.get("rebuilt") else "")
                 + (" (read-only store: not rebuilt)" if r.get("read_only") and index["state"] != "current" else "")]
        lines += [f"problem: {p}" for p in r["problems"]]
        return "\n".join(lines)

    emit(report, as_json, text)
    if not report["ok"]:
        raise StoreError(f"store integrity check failed: {len(report['problems'])} problem(s)")
