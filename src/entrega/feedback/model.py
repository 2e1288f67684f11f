"""What a client may send (how stored feedback is shown is ``views.FeedbackView``: raw,
escaping is the page's)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

UNKNOWN = "unknown"
MAX_COMMENT_CHARS = 2000
MAX_TAGS = 10


class FeedbackIn(BaseModel):
    """One rating and/or comment. Unknown fields are ignored (older widgets keep working)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    rating: int | None = Field(None, ge=1, le=5)
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    user_id: str | None = Field(None, max_length=128)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    #: the release, when the client knows it (otherwise from the router's cookie/header)
    version: str | None = Field(None, max_length=128)
    environment: str | None = Field(None, max_length=64)

    @field_validator("comment", "user_id", "version", "environment")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        cleaned = []
        for tag in value:
            tag = tag.strip()
            if not tag:
                continue
            if len(tag) > 32:
                raise ValueError("a tag is at most 32 characters")
            cleaned.append(tag)
        return cleaned

    @model_validator(mode="after")
    def _something_said(self) -> FeedbackIn:
        if self.rating is None and self.comment is None:
            raise ValueError("send a rating (1-5), a comment, or both")
        return self

