#ifndef HERALD_CLIBDEFLATE_SHIM_H
#define HERALD_CLIBDEFLATE_SHIM_H
#include <libdeflate.h>
#endif
