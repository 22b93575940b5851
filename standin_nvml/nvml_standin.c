/*
 * A stand-in for NVIDIA's libnvidia-ml.so.1, written for gpulse's tests and demo.
 *
 * It exports the NVML functions gpulse's shipper calls, with the signatures and struct layouts
 * of the public NVML API as the nvidia-ml-py bindings (pynvml) declare them, and answers from a
 * scenario file (path in GPULSE_NVML_SCENARIO; the format is in README.md). No NVIDIA code is
 * copied; nothing here touches hardware.
 *
 * Which functions exist is decided when the library is built: standin_nvml/build.py links with
 * a version script that exports every name in EXPORTS (build.py) minus the ones a scenario lists
 * as `missing`, so pynvml's dlsym fails for those exactly as on an older driver.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef unsigned int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define MAX_GPUS 64
#define MAX_MIG 7 /* what an H100 or A100 allows */
#define MAX_PROCS 64
#define MAX_XIDS 256
#define MAX_NAMES 64
#define TEXT 96
#define GPM_METRIC_MAX 477
#define GPM_METRIC_SM_UTIL 2
#define FI_DEV_MEMORY_TEMP 82
#define XID_EVENT 0x8ULL
#define NO_INSTANCE 0xFFFFFFFFu
#define MEMORY_V2 0x02000028u /* sizeof(nvmlMemory_v2_t) | 2 << 24 */

/* ---- the public structs, laid out as pynvml declares them ---- */

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t; /* v2 and v3 share this layout */
typedef struct {
    void *device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlEventData_t;
typedef struct { unsigned int version, isSupportedDevice; } nvmlGpmSupport_t;
typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    int siVal;
    unsigned short usVal;
} nvmlValue_t;
typedef struct {
    unsigned int fieldId, scopeId;
    long long timestamp, latencyUsec;
    unsigned int valueType; /* 1: NVML_VALUE_TYPE_UNSIGNED_INT */
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;
typedef struct {
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    struct { const char *shortName, *longName, *unit; } metricInfo;
} nvmlGpmMetric_t;
typedef struct {
    unsigned int version, numMetrics;
    void *sample1, *sample2;
    nvmlGpmMetric_t metrics[GPM_METRIC_MAX];
} nvmlGpmMetricsGet_t;

/* ---- the scenario ---- */

/* A reading: base + amp * sin(2 pi t / period), t in wall-clock seconds. */
typedef struct { double base, amp, period; } wave;

enum { KIND_GPU = 0x6770, KIND_MIG = 0x6d69 };

struct gpu;
typedef struct {
    int kind; /* KIND_MIG: handles are pointers to these structs, told apart by their first field */
    struct gpu *parent;
    unsigned gi, ci;
    char name[TEXT], uuid[TEXT];
    unsigned long long mem_total;
    wave mem_used, util_sm;
} mig;

typedef struct gpu {
    int kind;
    unsigned index;
    char name[TEXT], uuid[TEXT], pci[32];
    unsigned long long mem_total;
    wave mem_used, util_gpu, util_mem, power_mw, temp, sm_clock, mem_temp;
    int has_mem_temp; /* the MEMORY_TEMP field: NotSupported without a `mem_temp` line */
    unsigned power_limit_mw, temp_slowdown;
    long long throttle; /* the clocks-event-reasons bitmask */
    unsigned long long ecc_sbe, ecc_dbe;
    unsigned pcie_tx_kbs, pcie_rx_kbs;
    unsigned rows[4]; /* corrected, uncorrected, pending, failure */
    unsigned retired_sbe, retired_dbe;
    int gpm; /* nvmlGpmQueryDeviceSupport's isSupportedDevice */
    mig migs[MAX_MIG];
    int n_mig;
    nvmlProcessInfo_t procs[MAX_PROCS];
    int n_procs;
    char unsupported[MAX_NAMES][64];
    int n_unsupported;
} gpu;

typedef struct { double at; unsigned gpu; unsigned long long code; } xid;

static gpu gpus[MAX_GPUS];
static int n_gpus;
static xid xids[MAX_XIDS];
static int n_xids;
static char unsupported_all[MAX_NAMES][64];
static int n_unsupported_all;
static char driver_file[512];
static double driver_at; /* unix seconds: nvmlInit answers DRIVER_NOT_LOADED before then */
static int init_count;
static double init_time; /* when the scenario was loaded: xid `at` counts from here */

typedef struct { int magic; double t; double util; } gpm_sample;
#define GPM_MAGIC 0x67706d

typedef struct { unsigned long long mask[MAX_GPUS]; int next; } event_set;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double at(const wave *w, double t) {
    if (w->amp == 0 || w->period <= 0) return w->base;
    return w->base + w->amp * sin(2 * M_PI * t / w->period);
}

static unsigned clamp_u(double v, double hi) {
    if (v < 0) return 0;
    if (v > hi) return (unsigned)hi;
    return (unsigned)llround(v);
}

static int parse_wave(const char *rest, wave *w) {
    w->amp = 0;
    w->period = 0;
    return sscanf(rest, "%lf %lf %lf", &w->base, &w->amp, &w->period) >= 1 ? 0 : -1;
}

static void copy_text(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src);
}

static void new_gpu(void) {
    gpu *g = &gpus[n_gpus];
    memset(g, 0, sizeof *g);
    g->kind = KIND_GPU;
    g->index = (unsigned)n_gpus;
    snprintf(g->name, TEXT, "NVIDIA H100 80GB HBM3");
    snprintf(g->uuid, TEXT, "GPU-00000000-0000-4000-8000-%012x", n_gpus);
    snprintf(g->pci, sizeof g->pci, "00000000:%02X:00.0", 0x18 + n_gpus);
    g->mem_total = 85520809984ULL;
    g->power_limit_mw = 700000;
    g->temp_slowdown = 87;
    g->sm_clock.base = 1980;
    g->temp.base = 40;
    n_gpus++;
}

/* Load the scenario; on error, say why on stderr (line and text) and return -1. */
static int load(void) {
    const char *path = getenv("GPULSE_NVML_SCENARIO");
    if (path == NULL || *path == 0) {
        fprintf(stderr, "nvml-standin: GPULSE_NVML_SCENARIO is not set\n");
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "nvml-standin: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    n_gpus = n_xids = n_unsupported_all = 0;
    driver_file[0] = 0;
    driver_at = 0;
    char line[512], orig[512];
    int lineno = 0, bad = 0;
    while (!bad && fgets(line, sizeof line, f) != NULL) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        memcpy(orig, line, sizeof orig);
        char *key = line + strspn(line, " \t");
        if (*key == 0 || *key == '#') continue;
        char *rest = key + strcspn(key, " \t");
        if (*rest) *rest++ = 0;
        rest += strspn(rest, " \t");
        gpu *g = n_gpus ? &gpus[n_gpus - 1] : NULL;
        mig *m;
        if (strcmp(key, "gpu") == 0) {
            if (n_gpus == MAX_GPUS) bad = 1; else new_gpu();
        } else if (strcmp(key, "driver_loads_at") == 0) {
            bad = sscanf(rest, "%lf", &driver_at) != 1;
        } else if (strcmp(key, "driver_loads_when") == 0) {
            copy_text(driver_file, sizeof driver_file, rest);
        } else if (strcmp(key, "missing") == 0) {
            /* handled when building (build.py); nothing to do at run time */
        } else if (strcmp(key, "unsupported") == 0) {
            char (*list)[64] = g ? g->unsupported : unsupported_all;
            int *n = g ? &g->n_unsupported : &n_unsupported_all;
            if (*n == MAX_NAMES) bad = 1; else copy_text(list[(*n)++], 64, rest);
        } else if (g == NULL) {
            bad = 1; /* a GPU reading before the first `gpu` line */
        } else if (strcmp(key, "name") == 0) {
            copy_text(g->name, TEXT, rest);
        } else if (strcmp(key, "uuid") == 0) {
            copy_text(g->uuid, TEXT, rest);
        } else if (strcmp(key, "pci") == 0) {
            copy_text(g->pci, sizeof g->pci, rest);
        } else if (strcmp(key, "mem_total") == 0) {
            bad = sscanf(rest, "%llu", &g->mem_total) != 1;
        } else if (strcmp(key, "mem_used") == 0) {
            bad = parse_wave(rest, &g->mem_used);
        } else if (strcmp(key, "util_gpu") == 0) {
            bad = parse_wave(rest, &g->util_gpu);
        } else if (strcmp(key, "util_mem") == 0) {
            bad = parse_wave(rest, &g->util_mem);
        } else if (strcmp(key, "power_mw") == 0) {
            bad = parse_wave(rest, &g->power_mw);
        } else if (strcmp(key, "temp") == 0) {
            bad = parse_wave(rest, &g->temp);
        } else if (strcmp(key, "mem_temp") == 0) {
            bad = parse_wave(rest, &g->mem_temp);
            g->has_mem_temp = 1;
        } else if (strcmp(key, "sm_clock") == 0) {
            bad = parse_wave(rest, &g->sm_clock);
        } else if (strcmp(key, "power_limit_mw") == 0) {
            bad = sscanf(rest, "%u", &g->power_limit_mw) != 1;
        } else if (strcmp(key, "temp_slowdown") == 0) {
            bad = sscanf(rest, "%u", &g->temp_slowdown) != 1;
        } else if (strcmp(key, "throttle") == 0) {
            bad = sscanf(rest, "%lli", &g->throttle) != 1;
        } else if (strcmp(key, "ecc") == 0) {
            bad = sscanf(rest, "%llu %llu", &g->ecc_sbe, &g->ecc_dbe) != 2;
        } else if (strcmp(key, "pcie_kbs") == 0) {
            bad = sscanf(rest, "%u %u", &g->pcie_tx_kbs, &g->pcie_rx_kbs) != 2;
        } else if (strcmp(key, "remapped_rows") == 0) {
            bad = sscanf(rest, "%u %u %u %u", &g->rows[0], &g->rows[1], &g->rows[2], &g->rows[3]) != 4;
        } else if (strcmp(key, "retired_pages") == 0) {
            bad = sscanf(rest, "%u %u", &g->retired_sbe, &g->retired_dbe) != 2;
        } else if (strcmp(key, "gpm") == 0) {
            bad = sscanf(rest, "%d", &g->gpm) != 1;
        } else if (strcmp(key, "mig") == 0) {
            if (g->n_mig == MAX_MIG) { bad = 1; continue; }
            m = &g->migs[g->n_mig];
            memset(m, 0, sizeof *m);
            char profile[32];
            int used = 0;
            m->kind = KIND_MIG;
            m->parent = g;
            bad = sscanf(rest, "%u %u %31s %llu %n", &m->gi, &m->ci, profile, &m->mem_total, &used) < 4;
            if (!bad) bad = parse_wave(rest + used, &m->mem_used);
            /* an optional util_sm wave follows the mem_used wave after a '|' */
            char *bar = strchr(rest, '|');
            if (!bad && bar) bad = parse_wave(bar + 1, &m->util_sm);
            snprintf(m->name, TEXT, "%s MIG %s", g->name, profile);
            snprintf(m->uuid, TEXT, "MIG-%08x-0000-4000-8000-%04x%08x", (unsigned)g->index, m->gi, m->ci);
            g->n_mig++;
        } else if (strcmp(key, "mig_uuid") == 0 && g->n_mig) {
            copy_text(g->migs[g->n_mig - 1].uuid, TEXT, rest);
        } else if (strcmp(key, "process") == 0) {
            if (g->n_procs == MAX_PROCS) { bad = 1; continue; }
            nvmlProcessInfo_t *p = &g->procs[g->n_procs];
            p->gpuInstanceId = p->computeInstanceId = NO_INSTANCE;
            int got = sscanf(rest, "%u %llu %u %u", &p->pid, &p->usedGpuMemory, &p->gpuInstanceId,
                             &p->computeInstanceId);
            bad = got != 2 && got != 4;
            g->n_procs++;
        } else if (strcmp(key, "xid") == 0) {
            if (n_xids == MAX_XIDS) { bad = 1; continue; }
            xid *x = &xids[n_xids++];
            x->gpu = g->index;
            bad = sscanf(rest, "%lf %llu", &x->at, &x->code) != 2;
        } else {
            bad = 1;
        }
    }
    fclose(f);
    if (bad) {
        fprintf(stderr, "nvml-standin: %s line %d: cannot read '%s'\n", path, lineno, orig);
        return -1;
    }
    return 0;
}

/* ---- helpers shared by the exported functions ---- */

static int is_blocked(const gpu *g, const char *fn) {
    for (int i = 0; i < n_unsupported_all; i++)
        if (strcmp(unsupported_all[i], fn) == 0) return 1;
    for (int i = 0; g && i < g->n_unsupported; i++)
        if (strcmp(g->unsupported[i], fn) == 0) return 1;
    return 0;
}

static int is_gpu(const void *h) {
    for (int i = 0; i < n_gpus; i++)
        if (h == &gpus[i]) return 1;
    return 0;
}

static int is_mig(const void *h) {
    for (int i = 0; i < n_gpus; i++)
        if (gpus[i].n_mig && (const char *)h >= (const char *)gpus[i].migs &&
            (const char *)h < (const char *)(gpus[i].migs + gpus[i].n_mig))
            return 1;
    return 0;
}

/* The GPU of a full-GPU handle, after the usual checks; NULL sets *ret. */
#define GPU_OR_RETURN(h, fn)                                                            \
    gpu *g = NULL;                                                                     \
    if (!init_count) return NVML_ERROR_UNINITIALIZED;                                  \
    if (is_gpu(h)) g = (gpu *)(h);                                                     \
    else if (is_mig(h)) {                                                              \
        if (is_blocked(((mig *)(h))->parent, fn)) return NVML_ERROR_NOT_SUPPORTED;     \
    } else return NVML_ERROR_INVALID_ARGUMENT;                                         \
    if (g != NULL && is_blocked(g, fn)) return NVML_ERROR_NOT_SUPPORTED;

/* ---- library lifecycle ---- */

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    if (load() != 0) return NVML_ERROR_UNKNOWN;
    struct stat st;
    if (driver_file[0] && stat(driver_file, &st) != 0) return NVML_ERROR_DRIVER_NOT_LOADED;
    if (driver_at > 0 && now() < driver_at) return NVML_ERROR_DRIVER_NOT_LOADED;
    if (init_count++ == 0) init_time = now();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    init_count--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument Version Mismatch";
    default: return "Unknown Error";
    }
}

/* ---- devices ---- */

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *count = (unsigned)n_gpus;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device) {
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || index >= (unsigned)n_gpus) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &gpus[index];
    return NVML_SUCCESS;
}

static nvmlReturn_t put_text(char *out, unsigned int length, const char *text) {
    if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(text) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, text);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(void *h, char *name, unsigned int length) {
    GPU_OR_RETURN(h, "nvmlDeviceGetName");
    return put_text(name, length, g ? g->name : ((mig *)h)->name);
}

nvmlReturn_t nvmlDeviceGetUUID(void *h, char *uuid, unsigned int length) {
    GPU_OR_RETURN(h, "nvmlDeviceGetUUID");
    return put_text(uuid, length, g ? g->uuid : ((mig *)h)->uuid);
}

nvmlReturn_t nvmlDeviceGetIndex(void *h, unsigned int *index) {
    GPU_OR_RETURN(h, "nvmlDeviceGetIndex");
    if (g == NULL || index == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *index = g->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(void *h, nvmlPciInfo_t *pci) {
    GPU_OR_RETURN(h, "nvmlDeviceGetPciInfo_v3");
    if (g == NULL || pci == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    copy_text(pci->busId, sizeof pci->busId, g->pci);
    copy_text(pci->busIdLegacy, sizeof pci->busIdLegacy, g->pci);
    sscanf(g->pci, "%x:%x:%x", &pci->domain, &pci->bus, &pci->device);
    pci->pciDeviceId = 0x233010DE; /* device id | vendor id, as NVML packs it */
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(void *h, nvmlMemory_t *mem) {
    GPU_OR_RETURN(h, "nvmlDeviceGetMemoryInfo");
    if (mem == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    mem->total = g ? g->mem_total : ((mig *)h)->mem_total;
    double used = at(g ? &g->mem_used : &((mig *)h)->mem_used, now());
    mem->used = used < 0 ? 0 : used > (double)mem->total ? mem->total : (unsigned long long)used;
    mem->free = mem->total - mem->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(void *h, nvmlMemory_v2_t *mem) {
    nvmlMemory_t v1;
    if (mem == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (mem->version != MEMORY_V2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    nvmlReturn_t r = nvmlDeviceGetMemoryInfo(h, &v1);
    if (r != NVML_SUCCESS) return r;
    mem->total = v1.total;
    mem->reserved = 0;
    mem->used = v1.used;
    mem->free = v1.free;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(void *h, nvmlUtilization_t *util) {
    GPU_OR_RETURN(h, "nvmlDeviceGetUtilizationRates");
    /* MIG devices, and a GPU in MIG mode, have no utilisation counters: NVML says NotSupported */
    if (g == NULL || g->n_mig) return NVML_ERROR_NOT_SUPPORTED;
    if (util == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    double t = now();
    util->gpu = clamp_u(at(&g->util_gpu, t), 100);
    util->memory = clamp_u(at(&g->util_mem, t), 100);
    return NVML_SUCCESS;
}

/* The functions that read one unsigned int of a full GPU. */
#define UINT_READING(fn, expr)                                            \
    nvmlReturn_t fn(void *h, unsigned int *out) {                         \
        GPU_OR_RETURN(h, #fn);                                            \
        if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;                   \
        if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;              \
        *out = (expr);                                                    \
        return NVML_SUCCESS;                                              \
    }

UINT_READING(nvmlDeviceGetPowerUsage, clamp_u(at(&g->power_mw, now()), 4e9))
UINT_READING(nvmlDeviceGetEnforcedPowerLimit, g->power_limit_mw)
UINT_READING(nvmlDeviceGetPowerManagementLimit, g->power_limit_mw)

nvmlReturn_t nvmlDeviceGetTemperature(void *h, unsigned int sensor, unsigned int *temp) {
    GPU_OR_RETURN(h, "nvmlDeviceGetTemperature");
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (sensor != 0 || temp == NULL) return NVML_ERROR_INVALID_ARGUMENT; /* 0: NVML_TEMPERATURE_GPU */
    *temp = clamp_u(at(&g->temp, now()), 200);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperatureThreshold(void *h, unsigned int which, unsigned int *temp) {
    GPU_OR_RETURN(h, "nvmlDeviceGetTemperatureThreshold");
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (temp == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (which != 1) return NVML_ERROR_NOT_SUPPORTED; /* only 1: NVML_TEMPERATURE_THRESHOLD_SLOWDOWN */
    *temp = g->temp_slowdown;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetClockInfo(void *h, unsigned int type, unsigned int *clock) {
    GPU_OR_RETURN(h, "nvmlDeviceGetClockInfo");
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (clock == NULL || type > 3) return NVML_ERROR_INVALID_ARGUMENT;
    *clock = type == 1 ? clamp_u(at(&g->sm_clock, now()), 1e6) : 1593; /* 1: NVML_CLOCK_SM */
    return NVML_SUCCESS;
}

static nvmlReturn_t reasons(void *h, const char *fn, unsigned long long *out) {
    GPU_OR_RETURN(h, fn);
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *out = (unsigned long long)g->throttle;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(void *h, unsigned long long *out) {
    return reasons(h, "nvmlDeviceGetCurrentClocksEventReasons", out);
}

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(void *h, unsigned long long *out) {
    return reasons(h, "nvmlDeviceGetCurrentClocksThrottleReasons", out);
}

nvmlReturn_t nvmlDeviceGetPcieThroughput(void *h, unsigned int counter, unsigned int *kbs) {
    GPU_OR_RETURN(h, "nvmlDeviceGetPcieThroughput");
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (kbs == NULL || counter > 1) return NVML_ERROR_INVALID_ARGUMENT; /* 0: TX, 1: RX */
    *kbs = counter == 0 ? g->pcie_tx_kbs : g->pcie_rx_kbs;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(void *h, unsigned int type, unsigned int counter,
                                         unsigned long long *count) {
    GPU_OR_RETURN(h, "nvmlDeviceGetTotalEccErrors");
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (count == NULL || type > 1 || counter > 1) return NVML_ERROR_INVALID_ARGUMENT;
    *count = type == 0 ? g->ecc_sbe : g->ecc_dbe; /* 0: corrected, 1: uncorrected */
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetRetiredPages(void *h, unsigned int cause, unsigned int *count,
                                       unsigned long long *addresses) {
    GPU_OR_RETURN(h, "nvmlDeviceGetRetiredPages");
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (count == NULL || cause > 1) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned n = cause == 0 ? g->retired_sbe : g->retired_dbe;
    if (addresses == NULL || *count < n) {
        *count = n;
        return n ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    for (unsigned i = 0; i < n; i++) addresses[i] = 0x100000ULL * (i + 1) + cause;
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetRemappedRows(void *h, unsigned int *corr, unsigned int *unc,
                                       unsigned int *pending, unsigned int *failure) {
    GPU_OR_RETURN(h, "nvmlDeviceGetRemappedRows");
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (!corr || !unc || !pending || !failure) return NVML_ERROR_INVALID_ARGUMENT;
    *corr = g->rows[0];
    *unc = g->rows[1];
    *pending = g->rows[2];
    *failure = g->rows[3];
    return NVML_SUCCESS;
}

static nvmlReturn_t processes(void *h, const char *fn, unsigned int *count, nvmlProcessInfo_t *infos) {
    GPU_OR_RETURN(h, fn);
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned n = (unsigned)g->n_procs;
    if (infos == NULL || *count < n) {
        *count = n;
        return n ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    memcpy(infos, g->procs, n * sizeof *infos);
    *count = n;
    return NVML_SUCCESS;
}

/* _v2 (R470) and _v3 (R510 and later) fill the same struct */
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(void *h, unsigned int *count, nvmlProcessInfo_t *infos) {
    return processes(h, "nvmlDeviceGetComputeRunningProcesses_v2", count, infos);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *h, unsigned int *count, nvmlProcessInfo_t *infos) {
    return processes(h, "nvmlDeviceGetComputeRunningProcesses_v3", count, infos);
}

/* Only NVML_FI_DEV_MEMORY_TEMP is modelled; every other field answers NotSupported in its entry. */
nvmlReturn_t nvmlDeviceGetFieldValues(void *h, int count, nvmlFieldValue_t *values) {
    GPU_OR_RETURN(h, "nvmlDeviceGetFieldValues");
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (count < 0 || (count > 0 && values == NULL)) return NVML_ERROR_INVALID_ARGUMENT;
    double t = now();
    for (int i = 0; i < count; i++) {
        nvmlFieldValue_t *v = &values[i];
        v->timestamp = (long long)(t * 1e6);
        v->latencyUsec = 0;
        if (v->fieldId == FI_DEV_MEMORY_TEMP && g->has_mem_temp) {
            v->valueType = 1;
            v->value.ullVal = 0;
            v->value.uiVal = clamp_u(at(&g->mem_temp, t), 200);
            v->nvmlReturn = NVML_SUCCESS;
        } else {
            v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        }
    }
    return NVML_SUCCESS;
}

/* ---- MIG ---- */

nvmlReturn_t nvmlDeviceGetMigMode(void *h, unsigned int *current, unsigned int *pending) {
    GPU_OR_RETURN(h, "nvmlDeviceGetMigMode");
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (!current || !pending) return NVML_ERROR_INVALID_ARGUMENT;
    *current = *pending = g->n_mig ? 1 : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(void *h, unsigned int *count) {
    GPU_OR_RETURN(h, "nvmlDeviceGetMaxMigDeviceCount");
    if (g == NULL) return NVML_ERROR_NOT_SUPPORTED;
    if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *count = MAX_MIG;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(void *h, unsigned int index, void **out) {
    GPU_OR_RETURN(h, "nvmlDeviceGetMigDeviceHandleByIndex");
    if (g == NULL || out == NULL || index >= MAX_MIG) return NVML_ERROR_INVALID_ARGUMENT;
    if (index >= (unsigned)g->n_mig) return NVML_ERROR_NOT_FOUND; /* an empty slot */
    *out = &g->migs[index];
    return NVML_SUCCESS;
}

static nvmlReturn_t instance_id(void *h, const char *fn, int compute, unsigned int *id) {
    GPU_OR_RETURN(h, fn);
    if (g != NULL || id == NULL) return NVML_ERROR_INVALID_ARGUMENT; /* only MIG devices have one */
    *id = compute ? ((mig *)h)->ci : ((mig *)h)->gi;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(void *h, unsigned int *id) {
    return instance_id(h, "nvmlDeviceGetGpuInstanceId", 0, id);
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(void *h, unsigned int *id) {
    return instance_id(h, "nvmlDeviceGetComputeInstanceId", 1, id);
}

/* ---- GPM (Hopper and later) ---- */

nvmlReturn_t nvmlGpmQueryDeviceSupport(void *h, nvmlGpmSupport_t *support) {
    GPU_OR_RETURN(h, "nvmlGpmQueryDeviceSupport");
    if (g == NULL || support == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (support->version != 1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    support->isSupportedDevice = g->gpm ? 1 : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleAlloc(gpm_sample **out) {
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    gpm_sample *s = calloc(1, sizeof *s);
    if (s == NULL) return NVML_ERROR_UNKNOWN;
    s->magic = GPM_MAGIC;
    *out = s;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleFree(gpm_sample *s) {
    if (s == NULL || s->magic != GPM_MAGIC) return NVML_ERROR_INVALID_ARGUMENT;
    s->magic = 0;
    free(s);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleGet(void *h, gpm_sample *s) {
    GPU_OR_RETURN(h, "nvmlGpmSampleGet");
    if (g == NULL || s == NULL || s->magic != GPM_MAGIC) return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->gpm) return NVML_ERROR_NOT_SUPPORTED;
    s->t = now();
    s->util = at(&g->util_gpu, s->t);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmMigSampleGet(void *h, unsigned int gi, gpm_sample *s) {
    GPU_OR_RETURN(h, "nvmlGpmMigSampleGet");
    if (g == NULL || s == NULL || s->magic != GPM_MAGIC) return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->gpm) return NVML_ERROR_NOT_SUPPORTED;
    for (int i = 0; i < g->n_mig; i++) {
        if (g->migs[i].gi == gi) {
            s->t = now();
            s->util = at(&g->migs[i].util_sm, s->t);
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *req) {
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    if (req == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (req->version != 1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    gpm_sample *a = req->sample1, *b = req->sample2;
    if (!a || !b || a->magic != GPM_MAGIC || b->magic != GPM_MAGIC || req->numMetrics > GPM_METRIC_MAX)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < req->numMetrics; i++) {
        nvmlGpmMetric_t *m = &req->metrics[i];
        m->metricInfo.shortName = m->metricInfo.longName = m->metricInfo.unit = NULL;
        if (m->metricId != GPM_METRIC_SM_UTIL) {
            m->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
            continue;
        }
        /* the mean over the interval of a reading known at its two ends */
        m->value = (a->util + b->util) / 2;
        m->nvmlReturn = NVML_SUCCESS;
        m->metricInfo.shortName = "sm_util";
        m->metricInfo.longName = "SM utilization";
        m->metricInfo.unit = "%";
    }
    return NVML_SUCCESS;
}

/* ---- events ---- */

nvmlReturn_t nvmlEventSetCreate(event_set **out) {
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *out = calloc(1, sizeof **out);
    return *out ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
}

nvmlReturn_t nvmlDeviceRegisterEvents(void *h, unsigned long long types, event_set *set) {
    GPU_OR_RETURN(h, "nvmlDeviceRegisterEvents");
    if (g == NULL || set == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (types & ~XID_EVENT) return NVML_ERROR_NOT_SUPPORTED; /* only XID events are modelled */
    set->mask[g->index] |= types;
    return NVML_SUCCESS;
}

/* The next due XID of a registered GPU, in scenario order; each is delivered once per set. */
nvmlReturn_t nvmlEventSetWait_v2(event_set *set, nvmlEventData_t *data, unsigned int timeout_ms) {
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    if (set == NULL || data == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    double deadline = now() + timeout_ms / 1000.0;
    for (;;) {
        while (set->next < n_xids && !(set->mask[xids[set->next].gpu] & XID_EVENT)) set->next++;
        if (set->next < n_xids && now() - init_time >= xids[set->next].at) {
            xid *x = &xids[set->next++];
            memset(data, 0, sizeof *data);
            data->device = &gpus[x->gpu];
            data->eventType = XID_EVENT;
            data->eventData = x->code;
            data->gpuInstanceId = data->computeInstanceId = NO_INSTANCE;
            return NVML_SUCCESS;
        }
        if (now() >= deadline) return NVML_ERROR_TIMEOUT;
        usleep(10000);
    }
}

nvmlReturn_t nvmlEventSetFree(event_set *set) {
    if (set == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    free(set);
    return NVML_SUCCESS;
}
