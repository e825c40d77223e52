"""Table 2: Market-1501, single and multiple query, with and without re-ranking."""

from mgn.config import DatasetName
from mgn.evaluation.keys import MAP, R1, multi_query, reranked
from orchestration.tables.paper.stand_ins import mgn_on
from orchestration.tables.spec import Cell, Figures, PaperTable, Row, Trial, by_column

COLUMNS = ("SQ R1", "SQ mAP", "MQ R1", "MQ mAP")


def _cells(rerank: bool) -> dict[str, Cell]:
    """Single and multiple query (§4.2), with or without re-ranking."""

    def key(metric: str, multiple: bool) -> str:
        metric = reranked(metric) if rerank else metric
        return multi_query(metric) if multiple else metric

    keys = (key(R1, False), key(MAP, False), key(R1, True), key(MAP, True))
    return {column: Cell("MGN", k) for column, k in zip(COLUMNS, keys, strict=True)}


TABLE = PaperTable(
    key="table2",
    title="Table 2: Market-1501, single and multiple query",
    script="experiments/market_table2.py",
    dataset=DatasetName.MARKET1501,
    columns=COLUMNS,
    trials=(Trial("MGN", mgn_on(DatasetName.MARKET1501, multi_query=True)),),
    rows=(
        Row("MGN (Ours)", _cells(rerank=False), by_column(COLUMNS, (95.7, 86.9, 96.9, 90.7))),
        Row("MGN (Ours, RK)", _cells(rerank=True), by_column(COLUMNS, (96.6, 94.2, 97.1, 95.9))),
    ),
    figures=Figures(showcase="MGN"),
    references={
        name: by_column(COLUMNS, values)
        for name, values in {
            "MSCAN [18]": (80.3, 57.5, 86.8, 66.7),
            "DLPA [40]": (81.0, 63.4, None, None),
            "SVDNet [31]": (82.3, 62.1, None, None),
            "PDC [30]": (84.1, 63.4, None, None),
            "TriNet [14]": (84.9, 69.1, 90.5, 76.4),
            "JLML [20]": (85.1, 65.5, 89.7, 74.5),
            "DML [38]": (87.7, 68.8, 91.7, 77.1),
            "DPFL [6]": (88.6, 72.6, 92.2, 80.4),
            "HA-CNN [21]": (91.2, 75.7, 93.8, 82.8),
            "GP-reid [2]": (92.2, 81.2, 94.7, 87.3),
            "PCB [32]": (92.3, 77.4, None, None),
            "Deep-Person [3]": (92.3, 79.6, 94.5, 85.1),
            "Aligned-ReID [37]": (92.6, 82.3, None, None),
            "PCB+RPP [32]": (93.8, 81.6, None, None),
            "TriNet (RK) [14]": (86.7, 81.1, 91.8, 87.2),
            "GP-reid (RK) [2]": (92.2, 90.0, 94.2, 91.2),
            "Aligned-ReID (RK) [37]": (94.0, 91.2, None, None),
        }.items()
    },
)
