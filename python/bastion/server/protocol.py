"""The OpenAI wire format: request bodies (checked by pydantic, so a bad field is a 400 naming it
before anything is queued) and response bodies (so the OpenAPI document describes what is sent).

Requests accept OpenAI's fields plus vLLM's sampling extras (``top_k``, ``min_p``,
``repetition_penalty``, ``min_tokens``, ``ignore_eos``, ``stop_token_ids``, ``priority``);
unknown fields are ignored, as vLLM does, so clients sending newer fields keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from bastion.sampling.params import MAX_LOGPROBS

# strict: a value of the wrong JSON type is a 400 (as OpenAI answers), never coerced ("1" is no integer)
_IGNORE_EXTRA = ConfigDict(extra="ignore", strict=True)


def _integral(value: Any) -> Any:
    """JSON Schema's integer: ``3.0`` is one (strict pydantic alone would refuse it); ``3.5``, ``"3"`` and
    ``true`` are not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_integral)]
Stop = str | Annotated[list[str], Field(max_length=16)] | None


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with the request's usage."""

    model_config = _IGNORE_EXTRA
    include_usage: bool = False


class SamplingFields(BaseModel):
    """What completions and chat share: sampling, stopping and vLLM's extras."""

    model_config = _IGNORE_EXTRA
    model: str | None = Field(None, description="the served model id (GET /v1/models); optional")
    n: Int = Field(1, ge=1, description="choices to generate")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = None
    seed: Int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    # floors: a top_p that rounds to 0 in float32 failed the whole engine step (every request in the batch);
    # a repetition_penalty that rounds to 0 gave inf/NaN logits and a sampled id outside the vocabulary
    top_p: float = Field(1.0, ge=1e-6, le=1.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    user: str | None = Field(None, max_length=256, description="the end user, recorded in the audit trail")
    top_k: Int = Field(0, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, ge=0.01, le=10.0)
    min_tokens: Int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[Int] | None = Field(None, max_length=64)
    priority: Int = Field(0, ge=-(2**31), le=2**31 - 1, description="lower runs first under the priority policy")
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=64)]
    max_tokens: Int | None = Field(16, ge=1)
    logprobs: Int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsField | None = None


class TextPart(BaseModel):
    """One ``{"type": "text", "text": ...}`` part of a message's content."""

    model_config = _IGNORE_EXTRA
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = _IGNORE_EXTRA
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, description="an assistant's earlier tool calls")
    tool_call_id: str | None = Field(None, description="the call a tool message answers")

    def text(self) -> str:
        """The content as one string (text parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: the schema the answer must match."""

    model_config = _IGNORE_EXTRA
    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="a JSON schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``response_format``: plain text, any JSON object, or JSON matching a schema (enforced token by token)."""

    model_config = _IGNORE_EXTRA
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputsField(BaseModel):
    """vLLM's ``structured_outputs``: exactly one of a schema, a regex, a choice, a grammar or json_object."""

    model_config = ConfigDict(extra="forbid", strict=True)
    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None


class FunctionCall(BaseModel):
    """A called function: its name and its arguments as a JSON string."""

    model_config = _IGNORE_EXTRA
    name: str
    arguments: str


class ToolCall(BaseModel):
    """One tool call of an assistant message."""

    model_config = _IGNORE_EXTRA
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(BaseModel):
    """A function the model may call: name, description and a JSON schema of its parameters."""

    model_config = _IGNORE_EXTRA
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    """``tools[i]``."""

    model_config = _IGNORE_EXTRA
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    """``tool_choice.function``."""

    model_config = _IGNORE_EXTRA
    name: str


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming one function."""

    model_config = _IGNORE_EXTRA
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Int | None = Field(None, ge=1, description="deprecated by OpenAI; max_completion_tokens wins")
    max_completion_tokens: Int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: Int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsField | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True


# ---------------------------------------------------------------------------------------------- responses
class Usage(BaseModel):
    """Exact token counts: the prompt once, the completion tokens of every choice."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    """One alternative token (chat)."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    """A sampled token and its alternatives (chat)."""

    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    """``choices[i].logprobs`` of chat."""

    content: list[TokenLogprob] | None


class CompletionLogprobs(BaseModel):
    """``choices[i].logprobs`` of completions (the legacy parallel lists)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    """One completion."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    """The body of a non-streamed completion (a streamed one sends chunks of the same shape)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    """The answer of one chat choice."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    """One chat answer."""

    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    """The body of a non-streamed chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    """One served model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "bastion"
    max_model_len: int | None = None


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeRequest(BaseModel):
    """``POST /tokenize``: a prompt, or a conversation rendered with the chat template."""

    model_config = _IGNORE_EXTRA
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True


class TokenizeResponse(BaseModel):
    """The token ids and their count, with the context length they must fit."""

    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(BaseModel):
    """``POST /detokenize``."""

    model_config = _IGNORE_EXTRA
    model: str | None = None
    tokens: list[Annotated[Int, Field(ge=0)]]


class DetokenizeResponse(BaseModel):
    """The text of the token ids."""

    prompt: str


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every non-2xx answer."""

    error: ErrorDetail


# ---------------------------------------------------------------------------------------------- jobs
JobEndpoint = Literal["/v1/completions", "/v1/chat/completions"]


class JobRequest(BaseModel):
    """``POST /v1/jobs``: a completion or chat body run in the background."""

    model_config = ConfigDict(extra="forbid")
    endpoint: JobEndpoint = Field(description="which API the body is for")
    body: dict[str, Any] = Field(description="a /v1/completions or /v1/chat/completions body (not streamed)")
    webhook_url: str | None = Field(None, pattern=r"^https?://", max_length=2048,
                                    description="POSTed the finished job, signed with HMAC-SHA256")


class JobProgressInfo(BaseModel):
    """How far a job got."""

    output_tokens: int


class JobObject(BaseModel):
    """A job's state (``GET /v1/jobs/{id}``)."""

    id: str
    object: Literal["job"] = "job"
    endpoint: str | None
    status: Literal["queued", "running", "finished", "failed", "aborted"]
    created_at: float
    updated_at: float
    progress: JobProgressInfo
    attempts: int
    error: str | None = None


class JobResult(JobObject):
    """A job with its result: the OpenAI response body once finished."""

    result: dict[str, Any] | None = None


class JobList(BaseModel):
    """``GET /v1/jobs``: the caller's jobs, newest first."""

    object: Literal["list"] = "list"
    data: list[JobObject]
