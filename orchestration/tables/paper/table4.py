"""Table 4: CUHK03-NP (767/700 split), labeled and detected boxes."""

from mgn.config import DatasetName
from mgn.evaluation.keys import MAP, R1
from orchestration.tables.paper.stand_ins import mgn_on
from orchestration.tables.spec import Cell, Figures, PaperTable, Row, Trial, by_column

COLUMNS = ("Labeled R1", "Labeled mAP", "Detected R1", "Detected mAP")
LABELED, DETECTED = "MGN (labeled)", "MGN (detected)"

TABLE = PaperTable(
    key="table4",
    title="Table 4: CUHK03-NP (767/700), labeled and detected",
    script="experiments/cuhk03_table4.py",
    dataset=DatasetName.CUHK03_LABELED,
    columns=COLUMNS,
    trials=(
        Trial(
            LABELED, mgn_on(DatasetName.CUHK03_LABELED, {"num_cameras": 2, "bbox_jitter": 0.03, "seed": 2})
        ),
        Trial(
            DETECTED, mgn_on(DatasetName.CUHK03_DETECTED, {"num_cameras": 2, "bbox_jitter": 0.12, "seed": 2})
        ),
    ),
    rows=(
        Row(
            "MGN (Ours)",
            dict(zip(COLUMNS, (Cell(t, k) for t in (LABELED, DETECTED) for k in (R1, MAP)), strict=True)),
            by_column(COLUMNS, (68.0, 67.4, 66.8, 66.0)),
        ),
    ),
    figures=Figures(showcase=LABELED),
    references={
        name: by_column(COLUMNS, values)
        for name, values in {
            "BOW+XQDA [41]": (7.9, 7.3, 6.4, 6.4),
            "LOMO+XQDA [22]": (14.8, 13.6, 12.8, 11.5),
            "IDE [42]": (22.2, 21.0, 21.3, 19.7),
            "PAN [43]": (36.9, 35.0, 36.3, 34.0),
            "SVDNet [31]": (40.9, 37.8, 41.5, 37.3),
            "HA-CNN [21]": (44.4, 41.0, 41.7, 38.6),
            "MLFN [4]": (54.7, 49.2, 52.8, 47.8),
            "PCB [32]": (None, None, 61.3, 54.2),
            "PCB+RPP [32]": (None, None, 63.7, 57.5),
        }.items()
    },
)
