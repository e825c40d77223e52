"""Table 5: ablations on Market-1501, laid out from the rows of ``mgn.table5`` (one place per row)."""

from mgn import table5
from mgn.config import DatasetName
from mgn.evaluation.keys import MAP, MINP, R1, R5, R10, branch, ensemble, untrained
from mgn.model import branch_name
from orchestration.runtime.naming import slug
from orchestration.tables.spec import Cell, Ensemble, Figures, PaperTable, Row, Trial, by_column

COLUMNS = ("R1", "R5", "R10", "mAP")
METRICS = (R1, R5, R10, MAP, MINP)
UNTRAINED_MAP = "untrained mAP"


def _cells(row: table5.Ablation) -> dict[str, Cell]:
    """Each kind of row reads its metrics from where they are logged."""
    if isinstance(row, table5.TrainedRow):
        return {m: Cell(row.name, m) for m in METRICS} | {UNTRAINED_MAP: Cell(row.name, untrained(MAP))}
    if isinstance(row, table5.BranchRow):
        return {m: Cell(row.of, branch(branch_name(row.branch), m)) for m in METRICS}
    return {m: Cell(None, ensemble(slug(row.name), "{seed}", m)) for m in METRICS}


TABLE = PaperTable(
    key="table5",
    title="Table 5: ablations on Market-1501",
    script="experiments/ablation_table5.py",
    dataset=DatasetName.MARKET1501,
    columns=COLUMNS,
    extra_columns=(MINP, UNTRAINED_MAP),
    trials=tuple(Trial(row.name, row.config) for row in table5.trained_rows()),
    rows=tuple(Row(row.name, _cells(row), by_column(COLUMNS, row.paper), row.note) for row in table5.ROWS),
    ensembles=tuple(Ensemble(r.name, r.members) for r in table5.ROWS if isinstance(r, table5.EnsembleRow)),
    figures=Figures(showcase="MGN", baseline="ResNet-50", bars=(R1, MAP)),
    compare_to="MGN",
)
