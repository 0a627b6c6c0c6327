// XRT stub for tests: the subset of xrt.h (XRT 2022.2) the generated host relies on.
#ifndef XRT_STUB_XRT_H_
#define XRT_STUB_XRT_H_

#include <cstddef>
#include <cstdint>

#define XCL_DRIVER_DLLESPEC

typedef void* xclDeviceHandle;
typedef unsigned int xclBufferHandle;
typedef int xclBufferExportHandle;

enum xclBOSyncDirection {
    XCL_BO_SYNC_BO_TO_DEVICE = 0,
    XCL_BO_SYNC_BO_FROM_DEVICE,
    XCL_BO_SYNC_BO_GMIO_TO_AIE,
    XCL_BO_SYNC_BO_AIE_TO_GMIO,
};

#endif
