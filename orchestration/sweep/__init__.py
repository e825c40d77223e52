"""The paper sweep (``experiments/reproduce_paper.py``): every trial of Tables 2-5 as one study of the
driver, each network trained once however many tables read it (``plan``), every table published from
its own parent run (``study``) and the reproduction report ``results/paper.md`` (``report``)."""
