/**
 * Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`, so that every
 * OpenAI client library reports them as it reports the real API's.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: string = typeFor(status),
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

function typeFor(status: number): string {
  switch (status) {
    case 401: return 'authentication_error';
    case 404: return 'not_found_error';
    case 413: return 'request_too_large';
    case 429: return 'rate_limit_error';
    case 503: return 'server_unavailable';
    default: return status >= 500 ? 'server_error' : 'invalid_request_error';
  }
}
