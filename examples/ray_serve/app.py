"""An OpenAI-compatible Ray Serve app ordered by rtlm: the same file on this machine and on a cluster.

    serve run -d examples/ray_serve app:app urls=http://10.0.0.5:8000,http://10.0.0.6:8000

Arguments (``key=value`` after the import path, all optional but ``urls``):
  urls       comma-separated OpenAI-compatible servers, one forwarder replica each (vLLM: `vllm serve`)
  policy     rtlm (default), fcfs, sjf-input, sjf-pred (rtlm serve-local's policies)
  predictor  a predictor directory or a shipped name (default: reference); none for no prediction
  timing     the servers' timing table: vllm-cpu (default), h200, or a profile / timing file
  k          max_ongoing_requests per replica: the server's batch, vLLM's --max-num-seqs (default 8)
  router     rtlm (default) or ray (Ray Serve's own power-of-two choices, for comparison)
"""

from rtlm_cli.integrations.ray_serve.app import build


def app(args: dict):
    urls = [u for u in args.get("urls", "").split(",") if u]
    if not urls:
        raise ValueError("give the backend servers: urls=http://HOST:PORT[,http://HOST:PORT...]")
    predictor = args.get("predictor", "reference")
    return build(urls, policy=args.get("policy", "rtlm"), predictor=None if predictor == "none" else predictor,
                 timing=args.get("timing", "vllm-cpu"), max_ongoing_requests=int(args.get("k", 8)),
                 router=args.get("router", "rtlm"))
