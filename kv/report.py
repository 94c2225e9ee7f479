"""What a build did: counts, timings and a sample of the lines it skipped or
dropped, for the summary `kv build` prints and its `--json` output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SAMPLE = 5  # problems of each kind kept for the report


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 line`, `2 lines`, `1,000 lines` (`many` for irregular plurals)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


FORMAT_WORDS = {"uuid": "`UUID value` lines", "tsv": "`key<TAB>value` lines, string keys", "jsonl": "JSON lines, string keys"}


@dataclass
class Problem:
    line: int
    reason: str
    text: str


@dataclass
class BuildReport:
    source: str
    table: str
    records: int = 0
    lines: int = 0
    duplicates: int = 0
    skipped: int = 0
    value_bytes: int = 0
    table_bytes: int = 0
    seconds: float = 0.0
    generation: str = ""
    max_displacement: int = 0
    cr_stripped: int = 0
    input_format: str = "uuid"
    skipped_sample: list[Problem] = field(default_factory=list)
    duplicate_sample: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"built {self.table} from {self.source}",
            f"  format       {self.input_format} ({FORMAT_WORDS.get(self.input_format, self.input_format)})",
            f"  records      {self.records:,}",
            f"  duplicates   {self.duplicates:,}",
            f"  skipped      {self.skipped:,}",
            f"  value bytes  {self.value_bytes:,}",
            f"  table bytes  {self.table_bytes:,}",
            f"  seconds      {self.seconds:.2f}",
            f"  generation   {self.generation}",
        ]
        if self.cr_stripped:
            lines.append(f"  CR stripped  {plural(self.cr_stripped, 'line')}")
        for p in self.skipped_sample:
            lines.append(f"  skipped line {p.line}: {p.reason}: {p.text}")
        for p in self.duplicate_sample:
            lines.append(f"  duplicate line {p.line}: {p.reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)
