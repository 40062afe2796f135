"""Policies from an API's own description (``gateway policy init --openapi``).

Pure, in three steps: ``document`` reads a parsed OpenAPI 3.0/3.1 or Swagger
2.0 document into ``Operation`` values (``$ref`` resolved, cycles guarded),
``infer`` turns the operations of one API into rule drafts (reads allowed,
writes captured and undone where the description has the GET and the inverse
call, deletes held, the rest ``undo: none`` with the reason), and ``render``
writes them as a policy file that ``gateway policy check`` accepts. The CLI
reads the file and writes the result.
"""

from gateway.core.openapi.document import Api, Operation, read_api
from gateway.core.openapi.infer import Draft, Summary, infer, summarize
from gateway.core.openapi.render import render
from gateway.errors import DescriptionError

__all__ = ["Api", "DescriptionError", "Draft", "Operation", "Summary", "infer", "read_api",
           "render", "summarize"]
