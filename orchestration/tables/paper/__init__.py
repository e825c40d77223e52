"""The paper's Tables 2-5, one module each (``table2`` ... ``table5``), each defining ``TABLE``.

Published numbers are copied from the paper (Wang et al., 2018), in percent; ``None`` where the
paper prints "-".
"""
