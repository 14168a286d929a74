/* Uses the installed C ABI. */
#include <chatai.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  if (strcmp(chatai_version(), CHATAI_VERSION_STRING) != 0) return 1;
  printf("consumer (C) ok: chatai %s\n", chatai_version());
  return 0;
}
