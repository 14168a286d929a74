/* chatai.h: the C ABI of chatai, a Slurm-native OpenAI-compatible LLM service.
 *
 * Conventions:
 * - Functions return a chatai_status; CHATAI_OK (0) is success. On failure,
 *   chatai_last_error() describes the most recent failure on the calling thread.
 * - Objects are created into an out parameter (first) and released with the matching
 *   *_free function, which accepts NULL.
 * - Option structs start with a `version` field; initialise them with their _INIT macro.
 * - Strings passed in are borrowed for the duration of the call; strings returned are
 *   either borrowed pointers (documented lifetime) or copied into caller buffers.
 * - No C++ exception ever crosses this boundary.
 *
 * Thread safety: functions without an object are safe from any thread; an object may be
 * used by one thread at a time unless its section says otherwise. */
#ifndef CHATAI_H
#define CHATAI_H

#include <stddef.h>
#include <stdint.h>

#include "chatai_version.h"

#if defined(_WIN32)
#define CHATAI_API __declspec(dllexport)
#elif defined(__GNUC__)
#define CHATAI_API __attribute__((visibility("default")))
#else
#define CHATAI_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Compile-time version as one number: major * 10000 + minor * 100 + patch. */
#define CHATAI_VERSION_NUMBER (CHATAI_VERSION_MAJOR * 10000 + CHATAI_VERSION_MINOR * 100 + CHATAI_VERSION_PATCH)

/* Status codes. New codes may be added; treat unknown non-zero values as failures. */
typedef enum chatai_status {
  CHATAI_OK = 0,
  CHATAI_ERROR_INVALID_ARGUMENT = 1,   /* malformed input: nothing was changed */
  CHATAI_ERROR_NOT_FOUND = 2,          /* a file, model or name that does not exist */
  CHATAI_ERROR_IO = 3,                 /* the operating system refused a read or write */
  CHATAI_ERROR_PARSE = 4,              /* malformed bytes (JSON, GGUF, HTTP, template) */
  CHATAI_ERROR_OUT_OF_RANGE = 5,       /* a size or index beyond a limit */
  CHATAI_ERROR_UNSUPPORTED = 6,        /* well-formed, but not implemented by chatai */
  CHATAI_ERROR_TIMEOUT = 7,            /* a deadline passed */
  CHATAI_ERROR_CANCELLED = 8,          /* stopped at the caller's request */
  CHATAI_ERROR_UNAVAILABLE = 9,        /* a peer cannot serve now; retrying may help */
  CHATAI_ERROR_RESOURCE_EXHAUSTED = 10,/* memory, queue or context full */
  CHATAI_ERROR_PERMISSION_DENIED = 11, /* authentication or file permission */
  CHATAI_ERROR_INTERNAL = 12           /* a bug in chatai: please report it */
} chatai_status;

/* The library's version at run time, e.g. "0.1.0". Never NULL; static storage. */
CHATAI_API const char *chatai_version(void);

/* The run-time version as CHATAI_VERSION_NUMBER computes it at compile time. */
CHATAI_API unsigned chatai_version_number(void);

/* A short stable name for a status ("ok", "invalid_argument", ...). Never NULL. */
CHATAI_API const char *chatai_status_string(chatai_status status);

/* The message of the last failure on this thread, or "" if none. Never NULL. The pointer
 * stays valid until the next chatai call on this thread. */
CHATAI_API const char *chatai_last_error(void);

/* Forgets the last failure on this thread. */
CHATAI_API void chatai_clear_error(void);

/* ---- Model files ----------------------------------------------------------------------
 * A GGUF model file, memory-mapped read-only and validated when opened.
 * Thread safety: an open chatai_model_file is immutable; any number of threads may call
 * its accessors at once. */
typedef struct chatai_model_file chatai_model_file;

/* Opens and validates the GGUF file at `path` into *out.
 * Returns CHATAI_OK, or: CHATAI_ERROR_INVALID_ARGUMENT (a NULL argument or not a regular
 * file), CHATAI_ERROR_NOT_FOUND, CHATAI_ERROR_IO, CHATAI_ERROR_PERMISSION_DENIED,
 * CHATAI_ERROR_PARSE (malformed contents; the message names the byte offset), or
 * CHATAI_ERROR_UNSUPPORTED (a GGUF version other than 2 and 3). On failure *out is NULL. */
CHATAI_API chatai_status chatai_model_file_open(chatai_model_file **out, const char *path);

/* Unmaps and releases the file. Pointers borrowed from it become invalid. NULL is fine. */
CHATAI_API void chatai_model_file_free(chatai_model_file *file);

/* Sets *out to the general.architecture value ("llama", ...), a NUL-terminated string
 * borrowed from `file` until chatai_model_file_free.
 * Returns CHATAI_OK, CHATAI_ERROR_NOT_FOUND (no such key) or CHATAI_ERROR_INVALID_ARGUMENT
 * (a NULL argument, or the value is not a string); *out is NULL unless CHATAI_OK. */
CHATAI_API chatai_status chatai_model_file_architecture(const chatai_model_file *file, const char **out);

/* Copies the string metadata value of `key` into `buffer` (NUL-terminated, truncated to
 * buffer_size - 1 bytes) and sets *length (if not NULL) to the value's full length without
 * the NUL. `buffer` may be NULL when buffer_size is 0, to ask for the length.
 * Returns CHATAI_OK, CHATAI_ERROR_NOT_FOUND (no such key), CHATAI_ERROR_INVALID_ARGUMENT
 * (a NULL file or key, or the value is not a string) or CHATAI_ERROR_OUT_OF_RANGE (the
 * buffer was too small: it holds the truncated value and *length the size needed). */
CHATAI_API chatai_status chatai_model_file_metadata_string(const chatai_model_file *file, const char *key,
                                                           char *buffer, size_t buffer_size, size_t *length);

/* The number of tensors in the file; 0 for NULL. */
CHATAI_API size_t chatai_model_file_tensor_count(const chatai_model_file *file);

/* ---- Gate ------------------------------------------------------------------------------
 * Gate protocol version 1 (see chatai-gate): the strict check of a request header line, and
 * the gate's verbs run over two file descriptors, as the chatai-gate program runs them.
 * Thread safety: both functions may be called from any thread. */

/* Checks one request header line (the JSON object, without its newline) against the
 * anchored allowlists and limits of the gate config at `config_path` (NULL: the built-in
 * defaults). Whether the registry knows the service is not checked here.
 * Returns CHATAI_OK, or CHATAI_ERROR_INVALID_ARGUMENT (a NULL header, or a field refused;
 * chatai_last_error() names it) or CHATAI_ERROR_OUT_OF_RANGE (the line or body_length over a
 * limit), or the error of loading the config. *http_status (may be NULL) is set to the status
 * the gate answers a refused request with (400, 413), 0 otherwise. */
CHATAI_API chatai_status chatai_gate_validate(const char *config_path, const char *header, size_t header_len,
                                              int *http_status);

/* Runs one verb ("keep-alive", "status" or "request", exactly) with the gate config at
 * `config_path`, reading from `in_fd` and writing the answer to `out_fd`; the descriptors
 * stay open and owned by the caller. For "request" the caller keeps `in_fd` open until the
 * response has ended: end-of-file on it means the client has gone away. Refused requests
 * are answered with an HTTP error response and still return CHATAI_OK.
 * Returns CHATAI_OK (the answer was written whole), CHATAI_ERROR_INVALID_ARGUMENT (a NULL
 * path or an unknown verb: nothing was done), the error of loading the config, or
 * CHATAI_ERROR_IO (the answer was cut short: the client went away or the backend failed
 * during the response). */
CHATAI_API chatai_status chatai_gate_run(const char *config_path, const char *verb, int in_fd, int out_fd);

#ifdef __cplusplus
}
#endif

#endif /* CHATAI_H */
