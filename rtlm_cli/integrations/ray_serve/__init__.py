"""rtlm's decisions inside Ray Serve (``pip install rtlm[ray]``): a central capacity queue that hands
out replicas in the policy's order (``actor.py``, deciding with ``queue.py``), the request router
that asks it (``router.py``), the prediction made where a request enters Ray (``ingress.py``) and
``rtlm_routed`` that puts them on a deployment (``deployment.py``). docs/ray-serve.md tells what rtlm
decides there and what Ray keeps."""
