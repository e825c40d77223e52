"""Table 3: DukeMTMC-reID."""

from mgn.config import DatasetName
from mgn.evaluation.keys import MAP, R1, reranked
from orchestration.tables.paper.stand_ins import mgn_on
from orchestration.tables.spec import Cell, Figures, PaperTable, Row, Trial, by_column

COLUMNS = ("R1", "mAP")

TABLE = PaperTable(
    key="table3",
    title="Table 3: DukeMTMC-reID",
    script="experiments/duke_table3.py",
    dataset=DatasetName.DUKEMTMC,
    columns=COLUMNS,
    trials=(Trial("MGN", mgn_on(DatasetName.DUKEMTMC, {"num_cameras": 8, "seed": 1})),),
    rows=(
        Row("MGN (Ours)", {"R1": Cell("MGN", R1), "mAP": Cell("MGN", MAP)}, by_column(COLUMNS, (88.7, 78.4))),
        Row(
            "MGN (Ours, RK)",
            {"R1": Cell("MGN", reranked(R1)), "mAP": Cell("MGN", reranked(MAP))},
            note="not in the paper's table",
        ),
    ),
    figures=Figures(showcase="MGN"),
    references={
        name: by_column(COLUMNS, values)
        for name, values in {
            "PAN [43]": (71.6, 51.5),
            "FMN [9]": (74.5, 56.9),
            "SVDNet [31]": (76.7, 56.8),
            "PSE [27]": (79.8, 62.0),
            "HA-CNN [21]": (80.5, 63.8),
            "Deep-Person [3]": (80.9, 64.8),
            "PCB [32]": (83.3, 69.2),
            "GP-reid [2]": (85.2, 72.8),
        }.items()
    },
)
