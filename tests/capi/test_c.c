/* Calls the C ABI from C99: version, status names and the last-error contract. */
#include <stdio.h>
#include <string.h>

#include "chatai.h"

static int failures = 0;

#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

int main(void) {
  char expected[32];
  snprintf(expected, sizeof expected, "%d.%d.%d", CHATAI_VERSION_MAJOR, CHATAI_VERSION_MINOR, CHATAI_VERSION_PATCH);
  EXPECT(strcmp(chatai_version(), expected) == 0);
  EXPECT(strcmp(chatai_version(), CHATAI_VERSION_STRING) == 0);
  EXPECT(chatai_version_number() == CHATAI_VERSION_NUMBER);

  EXPECT(strcmp(chatai_status_string(CHATAI_OK), "ok") == 0);
  EXPECT(strcmp(chatai_status_string(CHATAI_ERROR_NOT_FOUND), "not_found") == 0);
  EXPECT(strcmp(chatai_status_string((chatai_status)999), "unknown") == 0);

  EXPECT(chatai_last_error() != NULL);
  chatai_clear_error();
  EXPECT(strcmp(chatai_last_error(), "") == 0);

  if (failures == 0) printf("C ABI test passed\n");
  return failures == 0 ? 0 : 1;
}
