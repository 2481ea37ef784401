/* Makes the header-only C target buildable; the ABI is herald_plugin.h (a link to Herald's). */
#include "herald_plugin.h"
