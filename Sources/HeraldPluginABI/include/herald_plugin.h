/*
 * herald_plugin.h — the C ABI between Herald and an out-of-tree driver plugin.
 *
 * A plugin is a shared library (.so on Linux, .dylib on macOS) that exports one symbol,
 * herald_plugin_entry, returning a static table of drivers. Herald loads plugins only
 * from directories the user lists (HERALD_PLUGIN_PATH, --plugin-dir), never from the
 * working directory. The ABI is C so that a plugin built with another compiler version,
 * or in another language, still loads; values cross it as small JSON texts.
 *
 * Rules every driver follows (checked by Herald's driver conformance kit):
 *  - Every call may block; Herald calls each device from one thread at a time, except
 *    cancel(), which may come from any thread while another call blocks.
 *  - A call that fails returns a non-OK status and writes a one-line message into
 *    error->message (NUL-terminated, at most HERALD_ERROR_CAPACITY bytes).
 *  - Quantities are in SI units (angles in degrees), as declared in the descriptor.
 *  - set() refuses values outside the declared ranges with HERALD_REJECTED.
 *  - safe_state() leaves the instrument safe to leave unattended (emission off, shutter
 *    closed); it is called on every exit path of a run.
 *
 * Descriptor JSON (descriptor_json):
 *   {"id": "vendor.model", "version": "1.2.0", "summary": "...",
 *    "kind": "laser" | "rotator" | "shutter" | "photon-counter" | "time-tagger",
 *    "channels": 4,                                   (time taggers only)
 *    "match": ["usb", "file", "name"],                (how it finds its instrument; default ["name"])
 *    "properties": [{"name": "power", "type": "quantity", "dimension": "power",
 *                    "min": 0, "max": 0.05, "settable": true, "summary": "..."},
 *                   {"name": "enabled", "type": "bool"},
 *                   {"name": "mode", "type": "choice", "options": ["cw", "pulsed"]},
 *                   {"name": "serial", "type": "text", "settable": false}],
 *    "settings": [ same shape: open-time settings from the script ]}
 *   dimension: dimensionless, time, frequency, current, power, length, angle,
 *              temperature, voltage.
 *
 * Value JSON: {"bool": true} | {"quantity": 0.01, "dimension": "power"} | {"text": "..."}
 * Settings JSON (open): {"name": <value JSON>, ...}
 */
#ifndef HERALD_PLUGIN_H
#define HERALD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change; Herald refuses plugins built for another version. */
#define HERALD_PLUGIN_ABI_VERSION 1u
#define HERALD_ERROR_CAPACITY 512

typedef enum herald_status {
    HERALD_OK = 0,
    HERALD_NOT_FOUND = 1,        /* the instrument is not attached */
    HERALD_DISCONNECTED = 2,     /* it went away */
    HERALD_TIMEOUT = 3,          /* it did not answer in time */
    HERALD_INVALID_RESPONSE = 4, /* it answered garbage */
    HERALD_REJECTED = 5,         /* the request is out of range or not allowed now */
    HERALD_UNSUPPORTED = 6,      /* no such property */
    HERALD_CANCELLED = 7         /* cancel() was called */
} herald_status;

typedef struct herald_error {
    char message[HERALD_ERROR_CAPACITY];
} herald_error;

/* Receives tags during acquire(), in time order; returns 0 to continue, non-zero to stop. */
typedef int (*herald_tag_sink)(void *context, const int64_t *timestamps_ps, const uint8_t *channels, size_t count);

typedef struct herald_driver_v1 {
    const char *descriptor_json;
    /* Creates a device (no I/O yet); NULL with error on bad settings. */
    void *(*open)(const char *name, const char *settings_json, herald_error *error);
    herald_status (*connect)(void *device, herald_error *error);
    herald_status (*set)(void *device, const char *property, const char *value_json, herald_error *error);
    /* Writes the value JSON into value_json (capacity bytes, NUL-terminated). */
    herald_status (*get)(void *device, const char *property, char *value_json, size_t capacity, herald_error *error);
    herald_status (*safe_state)(void *device, herald_error *error);
    /* Time taggers only (NULL otherwise): acquires for duration_ps, calling sink per block;
       start_ps/stop_ps receive the covered interval on the tag clock. */
    herald_status (*acquire)(
        void *device, int64_t duration_ps, herald_tag_sink sink, void *context, int64_t *start_ps, int64_t *stop_ps,
        herald_error *error);
    /* Asks the call in progress to return HERALD_CANCELLED promptly. Thread-safe. A driver
       may clear its cancel flag when a call starts: Herald repeats cancel() every 10 ms
       until the call it means has returned, and never starts a call already cancelled. */
    void (*cancel)(void *device);
    /* Closes the connection and frees the device. */
    void (*close)(void *device);
} herald_driver_v1;

typedef struct herald_plugin_v1 {
    uint32_t abi_version; /* HERALD_PLUGIN_ABI_VERSION */
    const char *name;
    const char *version;
    size_t driver_count;
    const herald_driver_v1 *drivers;
} herald_plugin_v1;

/* The one symbol a plugin exports. */
const herald_plugin_v1 *herald_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* HERALD_PLUGIN_H */
