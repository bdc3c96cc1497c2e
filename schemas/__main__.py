"""``python -m schemas bigquery scores|errors|windows|timelines|plans``: print a BigQuery JSON schema."""

import argparse
import json

from schemas import SCHEMAS, bigquery_schema

parser = argparse.ArgumentParser(prog="python -m schemas", description=__doc__)
parser.add_argument("format", choices=["bigquery"])
parser.add_argument("table", choices=sorted(SCHEMAS))
args = parser.parse_args()
print(json.dumps(bigquery_schema(SCHEMAS[args.table]), indent=2))
