"""User feedback: ratings and comments about a release, taken in by a public endpoint.

Feedback is never dropped for want of a release: what cannot be attributed is kept as
``unknown``. The endpoint is public, so it is bounded: a body size limit, and a token
bucket per client (keyed by a hash of the address, which is never stored).
"""

from entrega.feedback.intake import FeedbackIntake, FeedbackSettings
from entrega.feedback.model import FeedbackIn
from entrega.feedback.ratelimit import TokenBuckets

__all__ = ["FeedbackIn", "FeedbackIntake", "FeedbackSettings", "TokenBuckets"]
