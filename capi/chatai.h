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

#ifdef __cplusplus
}
#endif

#endif /* CHATAI_H */
