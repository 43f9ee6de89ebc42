"""Label maps: which dataset categories a model predicts, and under which class ids.

A label map entry ties a model class id (1..K, 0 is the background TF1 reserves) to a name and to
the category id used in the COCO annotations (`source_id`). Without a user label map the ids are
kept as they are (COCO: 1..90 with gaps), which is the layout of the TF1 zoo models.

User label maps may be:
- the OD API text format (`label_map.pbtxt`, `item { id: 1 name: 'cat' display_name: 'Cat' }`),
  matched to dataset categories by display_name, then name;
- JSON or YAML: a list of `{id, name[, source_id]}` mappings (source_id picks the dataset category;
  without it the category is found by name), or a plain list of names (ids 1..K in order).
The `label_map.json` that build-tfrecords writes is itself a valid label map.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class LabelMapEntry:
    id: int  # model class id, 1..K
    name: str
    source_id: int  # category id in the COCO annotations

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def _pbtxt_message_class() -> type:
    """The OD API `StringIntLabelMap` message, declared here so that parsing needs neither the
    OD API package nor compiled protos. Field numbers follow
    research/object_detection/protos/string_int_label_map.proto; newer optional fields (ancestor
    ids, LVIS frequency, ...) are skipped as unknown fields when a file has them."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="pipeline/string_int_label_map.proto", package="object_detection.protos"
    )
    item = proto.message_type.add(name="StringIntLabelMapItem")
    item.field.add(name="name", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    item.field.add(name="id", number=2, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    item.field.add(
        name="display_name", number=3, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL
    )
    keypoint = item.nested_type.add(name="KeypointMap")
    keypoint.field.add(name="id", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    keypoint.field.add(name="label", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    item.field.add(
        name="keypoints",
        number=4,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".object_detection.protos.StringIntLabelMapItem.KeypointMap",
    )
    label_map = proto.message_type.add(name="StringIntLabelMap")
    label_map.field.add(
        name="item",
        number=1,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".object_detection.protos.StringIntLabelMapItem",
    )
    # A private pool: never collides with an OD API install that registers the same names.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("object_detection.protos.StringIntLabelMap")
    )


def _read_pbtxt(path: Path) -> list[dict[str, Any]]:
    from google.protobuf import text_format

    message = _pbtxt_message_class()()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), message, allow_unknown_field=True)
    except text_format.ParseError as error:
        raise PipelineError(
            f"{path}: not a valid label_map.pbtxt ({error}); expected items like "
            "`item { id: 1 name: 'cat' }`"
        ) from None
    entries = []
    for index, item in enumerate(message.item):
        entry: dict[str, Any] = {"index": index}
        if item.HasField("id"):
            entry["id"] = item.id
        names = [n for n in (item.display_name, item.name) if n]
        if names:
            entry["name"] = names[0]
            entry["match_names"] = names
        entries.append(entry)
    return entries


def _read_structured(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as error:  # json.JSONDecodeError, yaml.YAMLError
        raise PipelineError(f"{path}: cannot parse label map ({error})") from None
    if isinstance(raw, Mapping) and "classes" in raw:
        raw = raw["classes"]
    if not isinstance(raw, list) or not raw:
        raise PipelineError(
            f"{path}: a label map must be a non-empty list of names or of {{id, name, source_id}}"
        )
    entries = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            entries.append({"index": index, "id": index + 1, "name": item, "match_names": [item]})
        elif isinstance(item, Mapping):
            entry = {
                "index": index,
                **{k: item[k] for k in ("id", "name", "source_id") if k in item},
            }
            if isinstance(entry.get("name"), str):
                entry["match_names"] = [entry["name"]]
            entries.append(entry)
        else:
            raise PipelineError(
                f"{path}: entry {index}: expected a name or a mapping, got {item!r}"
            )
    return entries


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_label_map(
    path: str | Path, categories: Iterable[Mapping[str, Any]]
) -> list[LabelMapEntry]:
    """Read a user label map and tie each entry to one of the dataset's `categories`."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: label map not found; check --label-map / data.label_map")
    raw = _read_pbtxt(path) if path.suffix.lower() == ".pbtxt" else _read_structured(path)
    categories = list(categories)
    by_id = {c["id"]: c for c in categories}
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for category in categories:
        by_name.setdefault(category["name"], []).append(category)

    entries: list[LabelMapEntry] = []
    for item in raw:
        where = f"{path}: entry {item['index']}"
        class_id = item.get("id")
        if not _is_int(class_id) or class_id < 1:
            raise PipelineError(
                f"{where}: id {class_id!r} must be an integer >= 1 (0 is the background class)"
            )
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise PipelineError(f"{where}: `name` is missing; give every class a name")
        if "source_id" in item:
            source_id = item["source_id"]
            if source_id not in by_id:
                raise PipelineError(
                    f"{where}: source_id {source_id!r} is not a category id of the annotations "
                    f"(known: {sorted(by_id)[:20]}...)"
                )
        else:
            matches = next((by_name[n] for n in item.get("match_names", []) if n in by_name), [])
            if len(matches) != 1:
                problem = "matches no" if not matches else "matches several"
                raise PipelineError(
                    f"{where}: name {name!r} {problem} category of the annotations; use the "
                    "category's exact name or give `source_id`"
                )
            source_id = matches[0]["id"]
        entries.append(LabelMapEntry(id=class_id, name=name, source_id=source_id))
    _check_unique(entries, str(path))
    return sorted(entries, key=lambda e: e.id)


def identity_label_map(categories: Iterable[Mapping[str, Any]], where: str) -> list[LabelMapEntry]:
    """Keep the dataset's category ids as model class ids (the TF1 zoo / COCO layout)."""
    entries = []
    for category in categories:
        if category["id"] < 1:
            raise PipelineError(
                f"{where}: categories[id={category['id']}].id: model class ids start at 1 (0 is "
                "background); pass --label-map to give this category another id"
            )
        entries.append(
            LabelMapEntry(id=category["id"], name=category["name"], source_id=category["id"])
        )
    _check_unique(entries, where)
    return sorted(entries, key=lambda e: e.id)


def _check_unique(entries: list[LabelMapEntry], where: str) -> None:
    for field in ("id", "name", "source_id"):
        seen: set[Any] = set()
        for entry in entries:
            value = getattr(entry, field)
            if value in seen:
                raise PipelineError(
                    f"{where}: {field} {value!r} appears twice in the label map; each class needs "
                    f"its own {field}"
                )
            seen.add(value)


def load_label_map_json(path: str | Path) -> list[LabelMapEntry]:
    """Read the `label_map.json` written by build-tfrecords."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(
            f"{path}: label map not found; it is written by build-tfrecords beside the TFRecords "
            "(or pass --label-map)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        entries = [LabelMapEntry(int(e["id"]), str(e["name"]), int(e["source_id"])) for e in raw]
    except (ValueError, KeyError, TypeError) as error:
        raise PipelineError(
            f"{path}: expected a list of {{id, name, source_id}} ({error!r}); regenerate it with "
            "build-tfrecords"
        ) from None
    _check_unique(entries, str(path))
    return entries


LABEL_MAP_FILE = "label_map.json"  # what build-tfrecords writes beside the TFRecords


def class_mismatch(entries: list[LabelMapEntry], num_classes: int) -> str | None:
    """Why a model with `num_classes` classes cannot be trained or scored with these label map
    entries, or None when they agree. They disagree when the label map uses class ids the model
    has no output for, or when it renumbers the categories (id != source_id, so class k means the
    label map's k-th category) into fewer or more ids than the model has: class k of the model
    would then be scored as, or trained towards, another category than the one it learnt.
    A label map keeping the dataset's own ids (a COCO subset for a COCO model) may use fewer."""
    if not entries:
        return "the label map is empty"
    top = max(entries, key=lambda entry: entry.id)
    if top.id > num_classes:
        return (
            f"class id {top.id} ('{top.name}') is beyond the model's {num_classes} classes "
            f"({sum(e.id > num_classes for e in entries)} of the label map's {len(entries)} are)"
        )
    renumbered = any(entry.id != entry.source_id for entry in entries)
    if renumbered and top.id != num_classes:
        return (
            f"the label map renumbers the dataset's categories to class ids 1..{top.id}, but the "
            f"model has {num_classes} classes, so its class ids mean other categories"
        )
    return None
