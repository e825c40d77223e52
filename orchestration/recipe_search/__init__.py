"""The recipe search, a client of the study driver: its space on Ray Tune (``space``), its study and
folder (``plan``), TPE + ASHA then the final training (``run``), its report (``report``) and command
line (``command``)."""
