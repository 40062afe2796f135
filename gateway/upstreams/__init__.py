"""How calls leave: the pooled HTTP/1.1 client (``client``, ``http1``), the upstreams'
credentials (``credentials``), and one sender per kind of upstream (``rest``, ``mcp``)."""
