"""The mapping file: what idsync gives each Entra user in Salesforce (see docs/mapping.md).

`load_mapping(path)` reads and validates a file (every problem with its line); `Mapping` is the model;
`check_mapping_text` is what `idsync mapping check` runs.
"""

from shared.mapping.model import Mapping  # first: the CRM section modules import it while it completes

# isort: split
from shared.mapping.loader import (
    MappingError,
    MappingProblem,
    check_mapping_text,
    load_mapping,
    parse_mapping_text,
)

__all__ = ["Mapping", "MappingError", "MappingProblem", "check_mapping_text", "load_mapping", "parse_mapping_text"]
