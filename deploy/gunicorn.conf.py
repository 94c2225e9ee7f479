# gunicorn configuration for kv: `kv serve` runs with this file from a checkout (kv serve --config FILE for another).
#   KV_TABLE=/var/lib/kv/current gunicorn -c deploy/gunicorn.conf.py 'kv.app:create_app()'
# Settings and hooks live in the package (kv/gunicorn_conf.py) so an installed
# kv and this file never disagree. A setting written here (e.g. `workers = 4`)
# applies unless a kv serve flag or KV_* variable gives it (kv/settings.py).
from kv.gunicorn_conf import *  # noqa: F403
