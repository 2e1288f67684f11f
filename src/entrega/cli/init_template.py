"""The entrega.yaml that `entrega init` writes: every field explained where it stands."""

TEMPLATE = """\
# entrega.yaml — how entrega delivers {app}.
# Check it with `entrega config validate`; editors can use `entrega config schema`.

app: {app}                       # the service's name (lowercase, digits, '-')

server:
  listen: "127.0.0.1:7070"       # the API and dashboard; the CLI talks to it

run:                              # how one instance runs (local target)
  command: "{command}"            # started in the release's directory; $PORT is set
  env: {{}}                        # extra environment variables for the app
  inherit_env: []                 # the server's variables the app also gets (none by default)
  health:
    path: /healthz                # GET must answer 2xx/3xx
    interval_s: 0.5               # probe every half second...
    healthy_threshold: 3          # ...and take traffic after 3 successes in a row
  drain_s: 10                     # after SIGTERM, seconds to finish requests, then SIGKILL

environments:                     # in lifecycle order
  - name: production
    target: {{kind: local, instances: 2}}   # ports: "20000-20999" bounds instance ports
    router:
      kind: embedded              # entrega's own proxy, a process of its own
      listen: "127.0.0.1:8080"    # where your users' traffic arrives
      preview_listen: "127.0.0.1:8180"   # blue-green previews are served here
      workers: 1                  # processes sharing listen (SO_REUSEPORT); raise it on a busy host
    strategy:
      canary:                     # or: blue-green: {{auto_promote: true, scale_down_delay_s: 30}}
        steps:
          - weight: 10            # 10% of requests go to the new release
          - analysis: {{duration_s: 60, metrics: [error-rate, latency-p95, latency-p99]}}
          - weight: 50
          - analysis: {{duration_s: 60, metrics: [error-rate, latency-p95, latency-p99]}}
          - weight: 100
      # an ssh target's hosts can take it a batch at a time instead, judged between batches:
      # rolling: {{batch: "25%", max_unavailable: 1,
      #           analysis: {{duration_s: 60, metrics: [error-rate, latency-p95]}}}}
    analysis:                     # how each metric is judged (canary vs stable)
      # fail when surely worse (at most 1% of good canaries ever fail); pass only on
      # evidence of being within pass_ratio (at most 5% of canaries beyond it ever pass)
      error-rate: {{judge: sequential, max_increase: 0.002, pass_ratio: 4}}
      latency-p95: {{judge: quantile, max_ratio: 1.2, pass_ratio: 1.4, min_requests: 50}}
      latency-p99: {{judge: quantile, max_ratio: 1.5, pass_ratio: 2.0, min_requests: 50}}
    verify:                       # checks of a blue-green preview before the switch
      - http: {{path: /healthz, expect_status: 200}}
"""


def render(app: str, command: str) -> str:
    return TEMPLATE.format(app=app, command=command.replace('"', '\\"'))
