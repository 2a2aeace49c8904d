"""Print the JSON Schema of workflow YAML files.

python -m bot.workflows > workflows/workflow.schema.json
"""

import sys

from bot.workflows.spec import json_schema_text

sys.stdout.write(json_schema_text())
