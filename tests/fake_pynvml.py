"""A scriptable stand-in for the ``pynvml`` module (nvidia-ml-py): the NVML hardware seam.

Only the names batchprof uses exist, with the real names, constants and error classes
(``tests/test_sampling.py`` checks them against the installed nvidia-ml-py). Values are
scripts: a constant, a list (one item per call, the last one repeating) or a zero-argument
callable. ``errors`` maps a function name to the NVML error code it raises on every call
(``"nvmlDeviceGetMemoryInfo_v2"`` stands for the call with ``version=``); ``field_returns``
maps a field id to the ``nvmlReturn`` code nvmlDeviceGetFieldValues reports for it.

    fake = FakePynvml([FakeGpu(utilization_gpu=[10, 90])], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    monkeypatch.setitem(sys.modules, "pynvml", fake)   # or pass nvml_module=fake
"""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_UNKNOWN = 999

NVML_CLOCK_SM = 1
NVML_TEMPERATURE_GPU = 0
NVML_FI_DEV_POWER_INSTANT = 186
NVML_VALUE_TYPE_UNSIGNED_INT = 1
nvmlMemory_v2 = 0x02000028

_ERROR_STRINGS = {
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH: "Argument version mismatch",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml's: ``NVMLError(code)`` builds the matching subclass; ``.value`` is the code."""

    _by_code: dict[int, type[NVMLError]] = {}
    code: int | None = None

    def __new__(cls, value: int | None = None):
        if cls is NVMLError:
            cls = NVMLError._by_code.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = cls.code if value is None else value
        return obj

    def __init__(self, value: int | None = None):
        super().__init__(self.value)

    def __str__(self) -> str:
        return _ERROR_STRINGS.get(self.value, f"NVML Error with code {self.value}")


def _error_class(name: str, code: int) -> type[NVMLError]:
    cls = type(name, (NVMLError,), {"code": code})
    NVMLError._by_code[code] = cls
    return cls


NVMLError_InvalidArgument = _error_class("NVMLError_InvalidArgument", NVML_ERROR_INVALID_ARGUMENT)
NVMLError_NotSupported = _error_class("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _error_class("NVMLError_NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_NotFound = _error_class("NVMLError_NotFound", NVML_ERROR_NOT_FOUND)
NVMLError_DriverNotLoaded = _error_class("NVMLError_DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_LibraryNotFound = _error_class("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _error_class("NVMLError_FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_GpuIsLost = _error_class("NVMLError_GpuIsLost", NVML_ERROR_GPU_IS_LOST)
NVMLError_Unknown = _error_class("NVMLError_Unknown", NVML_ERROR_UNKNOWN)

Script = Any  # a constant, a list consumed one item per call, or a callable


@dataclass
class FakeGpu:
    """One device. Power/energy in NVML's units (mW, mJ)."""

    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    name: str = "NVIDIA Fake H100"
    utilization_gpu: Script = 50
    utilization_memory: Script = 20
    memory_total: int = 80 * 2**30
    memory_used: Script = 10 * 2**30
    memory_reserved: Script = 512 * 2**20
    power_instant_mw: Script = 300_000
    power_usage_mw: Script = 250_000
    energy_mj: Script = 1_000_000
    sm_clock_mhz: Script = 1980
    temperature_c: Script = 60
    errors: dict[str, int] = field(default_factory=dict)
    field_returns: dict[int, int] = field(default_factory=dict)
    _cursor: Counter = field(default_factory=Counter, repr=False)

    def value(self, attr: str) -> Any:
        script = getattr(self, attr)
        if callable(script):
            return script()
        if isinstance(script, list):
            i = self._cursor[attr]
            self._cursor[attr] += 1
            return script[min(i, len(script) - 1)]
        return script


class FakePynvml(types.ModuleType):
    """The module object. ``calls`` counts calls per function; ``initialized`` is NVML's
    init refcount (0 after a balanced init/shutdown)."""

    def __init__(self, gpus: list[FakeGpu] | None = None, *, init_error: int | None = None,
                 extra_uuid_devices: list[FakeGpu] | None = None,
                 driver_version: str = "570.00"):
        super().__init__("pynvml")
        for name, value in globals().items():  # constants and error classes, as in pynvml
            if name.startswith(("NVML", "nvmlMemory")):
                setattr(self, name, value)
        self.gpus = [FakeGpu()] if gpus is None else gpus
        self.extra_uuid_devices = extra_uuid_devices or []  # e.g. MIG devices: by UUID only
        self.init_error = init_error
        self.driver_version = driver_version
        self.calls: Counter[str] = Counter()
        self.initialized = 0

    def _enter(self, name: str, handle: FakeGpu | None = None) -> None:
        self.calls[name] += 1
        if name not in ("nvmlInit", "nvmlShutdown") and self.initialized <= 0:
            raise NVMLError(1)  # NVML_ERROR_UNINITIALIZED
        if handle is not None and name in handle.errors:
            raise NVMLError(handle.errors[name])

    # ---- lifecycle ----------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        if self.initialized <= 0:
            raise NVMLError(1)
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._enter("nvmlSystemGetNVMLVersion")
        return f"12.{self.driver_version}"

    # ---- devices ------------------------------------------------------------------------
    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu:
        self._enter("nvmlDeviceGetHandleByUUID")
        for gpu in self.gpus + self.extra_uuid_devices:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        self._enter("nvmlDeviceGetUUID", handle)
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        self._enter("nvmlDeviceGetName", handle)
        return handle.name

    # ---- metrics ------------------------------------------------------------------------
    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> Any:
        self._enter("nvmlDeviceGetUtilizationRates", handle)
        return types.SimpleNamespace(gpu=handle.value("utilization_gpu"),
                                     memory=handle.value("utilization_memory"))

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu, version: int | None = None) -> Any:
        self._enter("nvmlDeviceGetMemoryInfo", handle)
        used = handle.value("memory_used")
        if version is None:
            reserved = handle.value("memory_reserved")  # v1's "used" includes the reserve
            return types.SimpleNamespace(total=handle.memory_total, used=used + reserved,
                                         free=handle.memory_total - used - reserved)
        if "nvmlDeviceGetMemoryInfo_v2" in handle.errors:
            raise NVMLError(handle.errors["nvmlDeviceGetMemoryInfo_v2"])
        reserved = handle.value("memory_reserved")
        return types.SimpleNamespace(version=version, total=handle.memory_total, used=used,
                                     reserved=reserved, free=handle.memory_total - used - reserved)

    def nvmlDeviceGetFieldValues(self, handle: FakeGpu, field_ids: list[int]) -> list[Any]:
        self._enter("nvmlDeviceGetFieldValues", handle)
        out = []
        for field_id in field_ids:
            ret = handle.field_returns.get(field_id, NVML_SUCCESS)
            number = handle.value("power_instant_mw") if field_id == NVML_FI_DEV_POWER_INSTANT else 0
            out.append(types.SimpleNamespace(
                fieldId=field_id, nvmlReturn=ret, valueType=NVML_VALUE_TYPE_UNSIGNED_INT,
                value=types.SimpleNamespace(uiVal=number if ret == NVML_SUCCESS else 0)))
        return out

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        self._enter("nvmlDeviceGetPowerUsage", handle)
        return handle.value("power_usage_mw")

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu) -> int:
        self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
        return handle.value("energy_mj")

    def nvmlDeviceGetClockInfo(self, handle: FakeGpu, clock_type: int) -> int:
        self._enter("nvmlDeviceGetClockInfo", handle)
        if clock_type != NVML_CLOCK_SM:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return handle.value("sm_clock_mhz")

    def nvmlDeviceGetTemperatureV(self, handle: FakeGpu, sensor: int) -> int:
        self._enter("nvmlDeviceGetTemperatureV", handle)
        return handle.value("temperature_c")

    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        self._enter("nvmlDeviceGetTemperature", handle)
        return handle.value("temperature_c")


def api_names(module: Any) -> set[str]:
    """The pynvml names the fake defines (functions, constants, error classes)."""
    return {n for n in dir(module) if n.startswith(("nvml", "NVML"))}

