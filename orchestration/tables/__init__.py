"""The paper's Tables 2-5, a client of the study driver: each table declared once (``spec``,
``paper/``, ``registry``), planned (``planning``, ``resuming``), rehearsed (``rehearsal``), run as a
grid (``grid``, ``command``), and rendered from the MLflow store (``render``, ``figures``,
``ensembles``, ``statistics``). ``python -m orchestration.tables table5`` rebuilds a table."""
