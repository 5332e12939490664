"""novita_video: many prompts in, video clips out, through Novita AI's async video API.

The rooms, in the order a prompt travels (each private module holds one idea, and
imports only the rooms below it: tests/test_structure.py holds it to that):

    _catalog   one table per model, from Novita's reference pages (also the simulator's)
    _requests  what can be submitted: VideoRequest, HailuoRequest, ..., checked on creation
    _unified   Novita's catalogue of every video model, and CatalogRequest, checked by its schema
    _balance   the account's Balance in dollars, and SpendCap, which stops a batch at a cap
    _client    Client: the lifetime (pools, task group, poller), submit / get_result / wait
    _batch     generate(): reads prompts lazily, submits under the limits, yields Outcomes
    _submit    Submitter: the limiter, the POST, never a POST twice that may have billed
    _retrier   the one retry driver: submit, get, download and the poller's checks
    _limits    RateLimiter: evenly spaced requests, slower after a 429
    _shared    the same limits shared by every worker of a key, through Redis (opt-in)
    _observe   every request seen above the transport: event hooks, NOVITA_LOG's lines
    _transport the public seam: Transport, Response, Sending; MockTransport for tests
    _http      the only aiohttp user, the real transport: the key in its header, errors mapped
    _poller    the one poller: a heap of due checks for every outstanding task
    _schedule  when to check a task next, from its eta and progress (a pure function)
    _wire      the one cattrs converter: JSON in and out, unknown keys and statuses tolerated
    _models    what comes back: TaskStatus, TaskResult, Video, Outcome (and the task errors)
    _retry     pure decisions: what to retry, how long to wait, when a POST is unknowable
    _errors    the exception tree (a leaf), and which errors doom a batch
    _stats     the counters every room adds to (a leaf)
    _settings  every setting's default and check, in small frozen objects (on _errors)
    _clock     injectable time (SystemClock, ScaledClock)
    _logs      NOVITA_LOG, and the filter that keeps credentials out of every line

    testing/   FakeNovita, a faithful local simulator of the API, its CLI and pytest fixture

    generate -> _batch -> _submit (_limits, _retrier, _http POST) -> _poller heap
             (_http GET, _wire) -> Outcome
"""

import attrs

from ._balance import Balance as Balance
from ._balance import SpendCap as SpendCap
from ._batch import Batch as Batch
from ._client import Client as Client
from ._client import ClientStatistics as ClientStatistics
from ._client import InsecureTransportWarning as InsecureTransportWarning
from ._clock import Clock as Clock
from ._clock import ScaledClock as ScaledClock
from ._clock import SystemClock as SystemClock
from ._errors import APIConnectionError as APIConnectionError
from ._errors import APIStatusError as APIStatusError
from ._errors import APITimeoutError as APITimeoutError
from ._errors import APIUnreachableError as APIUnreachableError
from ._errors import AuthenticationError as AuthenticationError
from ._errors import BackPressureError as BackPressureError
from ._errors import BadRequestError as BadRequestError
from ._errors import BatchAbortedError as BatchAbortedError
from ._errors import ClientClosedError as ClientClosedError
from ._errors import DownloadError as DownloadError
from ._errors import InsufficientBalanceError as InsufficientBalanceError
from ._errors import InvalidRequestError as InvalidRequestError
from ._errors import LocalFileError as LocalFileError
from ._errors import MissingAPIKeyError as MissingAPIKeyError
from ._errors import NotFoundError as NotFoundError
from ._errors import NovitaError as NovitaError
from ._errors import PermissionDeniedError as PermissionDeniedError
from ._errors import ProtocolError as ProtocolError
from ._errors import RateLimitError as RateLimitError
from ._errors import ServerError as ServerError
from ._errors import SpendCapReachedError as SpendCapReachedError
from ._errors import SubmissionUnknownError as SubmissionUnknownError
from ._errors import UsageError as UsageError
from ._limits import AdaptiveRate as AdaptiveRate
from ._logs import setup_logging as _setup_logging
from ._models import Outcome as Outcome
from ._models import Submission as Submission
from ._models import TaskFailedError as TaskFailedError
from ._models import TaskResult as TaskResult
from ._models import TaskStatus as TaskStatus
from ._models import TaskTimeoutError as TaskTimeoutError
from ._models import Video as Video
from ._observe import RequestEvent as RequestEvent
from ._observe import ResponseEvent as ResponseEvent
from ._requests import MODELS as MODELS
from ._requests import AsyncRequest as AsyncRequest
from ._requests import HailuoRequest as HailuoRequest
from ._requests import KlingI2VRequest as KlingI2VRequest
from ._requests import KlingT2VRequest as KlingT2VRequest
from ._requests import Lora as Lora
from ._requests import Request as Request
from ._requests import VideoRequest as VideoRequest
from ._requests import WanI2VRequest as WanI2VRequest
from ._requests import WanT2VRequest as WanT2VRequest
from ._retry import RetryPolicy as RetryPolicy
from ._schedule import PollSchedule as PollSchedule
from ._transport import MockTransport as MockTransport
from ._transport import Response as Response
from ._transport import Sending as Sending
from ._transport import Transport as Transport
from ._transport import TransportRequest as TransportRequest
from ._unified import CatalogField as CatalogField
from ._unified import CatalogModel as CatalogModel
from ._unified import CatalogRequest as CatalogRequest
from ._version import __version__ as __version__

__all__ = [
    "MODELS",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "APIUnreachableError",
    "AdaptiveRate",
    "AsyncRequest",
    "AuthenticationError",
    "BackPressureError",
    "BadRequestError",
    "Balance",
    "Batch",
    "BatchAbortedError",
    "CatalogField",
    "CatalogModel",
    "CatalogRequest",
    "Client",
    "ClientClosedError",
    "ClientStatistics",
    "Clock",
    "DownloadError",
    "HailuoRequest",
    "InsecureTransportWarning",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "KlingI2VRequest",
    "KlingT2VRequest",
    "LocalFileError",
    "Lora",
    "MissingAPIKeyError",
    "MockTransport",
    "NotFoundError",
    "NovitaError",
    "Outcome",
    "PermissionDeniedError",
    "PollSchedule",
    "ProtocolError",
    "RateLimitError",
    "Request",
    "RequestEvent",
    "Response",
    "ResponseEvent",
    "RetryPolicy",
    "ScaledClock",
    "Sending",
    "ServerError",
    "SpendCap",
    "SpendCapReachedError",
    "Submission",
    "SubmissionUnknownError",
    "SystemClock",
    "TaskFailedError",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "Transport",
    "TransportRequest",
    "UsageError",
    "Video",
    "VideoRequest",
    "WanI2VRequest",
    "WanT2VRequest",
    "__version__",
]


def _show_public_home() -> None:
    # Users see `novita_video.Client`, not the private module it is written in (reprs,
    # tracebacks, help()); pickles find every class here too.
    # Not for attrs classes: typing.get_type_hints reads their (postponed) annotations
    # in the module named by __module__, which must stay the one they were written in.
    for name in __all__:
        obj = globals()[name]
        private = isinstance(obj, type) and obj.__module__.startswith("novita_video._")
        if private and not attrs.has(obj):
            obj.__module__ = __name__


_show_public_home()
# NOVITA_LOG=debug|info: the novita_video logger to stderr (and its filter, always).
_setup_logging()
