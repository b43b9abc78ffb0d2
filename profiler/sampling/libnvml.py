"""The only module that talks to NVML (``pynvml``, from the ``nvidia-ml-py`` distribution).

``pynvml`` is imported lazily, inside functions, so ``import batchprof`` works on machines with
no NVIDIA driver. NVML errors are translated here, at the boundary:

- initialisation failures (no ``libnvidia-ml.so.1``, driver not loaded, no permission, no
  such GPU) raise :class:`~batchprof.sampling.SamplerUnavailable` with a one-line reason;
- a metric the device does not support (``NVMLError_NotSupported``, ``NoPermission``,
  ``FunctionNotFound``) becomes None *for the rest of the run* and is not asked again;
- any other error while sampling makes that one reading None.

Which GPU: callers speak CUDA ordinals (``cuda:N``); :func:`nvml_target` maps them through
``CUDA_VISIBLE_DEVICES`` as the CUDA runtime does. Supported entries: integers (NVML indices),
``GPU-<uuid>`` (full or a unique prefix) and ``MIG-<uuid>``. Not supported (SamplerUnavailable
naming the entry): the CUDA 11.0-era ``MIG-GPU-<uuid>/<gi>/<ci>`` form. Integer mapping assumes
CUDA and NVML enumerate in the same order, i.e. ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or GPUs of
one model; pass ``device_uuid`` to be exact.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batchprof.sampling.base import (
    SamplerUnavailable,
)

# Error codes as NVML defines them (compared by value: robust to fakes and old pynvml).
_ERR_INVALID_ARGUMENT = 2


_ERR_NOT_SUPPORTED = 3


_ERR_NO_PERMISSION = 4


_ERR_NOT_FOUND = 6


_ERR_DRIVER_NOT_LOADED = 9


_ERR_LIBRARY_NOT_FOUND = 12


_ERR_FUNCTION_NOT_FOUND = 13


_ERR_ARGUMENT_VERSION_MISMATCH = 25


# Asking again will not help: the metric is None for the whole run.
_PERMANENT = {_ERR_NOT_SUPPORTED, _ERR_NO_PERMISSION, _ERR_FUNCTION_NOT_FOUND}


# An optional newer API (v2 memory info, TemperatureV) failing like this means "use the old one".
_USE_FALLBACK = _PERMANENT | {_ERR_INVALID_ARGUMENT, _ERR_ARGUMENT_VERSION_MISMATCH}


_INIT_REASONS = {
    _ERR_LIBRARY_NOT_FOUND: "the NVML library (libnvidia-ml.so.1) was not found: no NVIDIA "
                            "driver is installed on this machine",
    _ERR_DRIVER_NOT_LOADED: "the NVIDIA driver is not loaded (check `nvidia-smi`)",
    _ERR_NO_PERMISSION: "no permission to query NVML (check the /dev/nvidia* permissions)",
}


def load_pynvml(nvml_module: Any = None) -> Any:
    """Return ``nvml_module`` or the imported ``pynvml``; SamplerUnavailable if missing."""
    if nvml_module is not None:
        return nvml_module
    try:
        import pynvml
    except ImportError as err:
        raise SamplerUnavailable("the nvidia-ml-py package (module pynvml) is not installed; "
                                 "`pip install nvidia-ml-py`") from err
    return pynvml


def _code(err: BaseException) -> int | None:
    return getattr(err, "value", None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_target(cuda_index: int, visible_devices: str | None) -> int | str:
    """The NVML index (int) or UUID (str) of CUDA ordinal ``cuda_index``.

    ``visible_devices`` is ``CUDA_VISIBLE_DEVICES`` (None: unset, ordinals are NVML indices).
    Like CUDA, parsing stops at the first entry that is not an integer or UUID, and at a
    negative integer. Raises SamplerUnavailable when the ordinal is not visible, ValueError
    for a negative ``cuda_index``.
    """
    if cuda_index < 0:
        raise ValueError(f"cuda_index must be >= 0, got {cuda_index}")
    if visible_devices is None:
        return cuda_index
    entries: list[int | str] = []
    for raw in visible_devices.split(","):
        token = raw.strip()
        if token.lstrip("+-").isdigit():
            if int(token) < 0:
                break
            entries.append(int(token))
        elif token.startswith(("GPU-", "MIG-")):
            entries.append(token)
        else:
            break
    if cuda_index >= len(entries):
        raise SamplerUnavailable(
            f"CUDA device {cuda_index} is not visible: CUDA_VISIBLE_DEVICES={visible_devices!r} "
            f"exposes {len(entries)} device(s)")
    return entries[cuda_index]


def _handle_for(pynvml: Any, target: int | str) -> Any:
    if isinstance(target, int):
        return pynvml.nvmlDeviceGetHandleByIndex(target)
    if target.startswith("MIG-GPU-") or "/" in target:
        raise SamplerUnavailable(
            f"CUDA_VISIBLE_DEVICES entry {target!r} uses the MIG-GPU-<uuid>/<gi>/<ci> form, "
            "which batchprof does not map; use the MIG-<uuid> form `nvidia-smi -L` prints")
    try:
        return pynvml.nvmlDeviceGetHandleByUUID(target)
    except pynvml.NVMLError as err:
        if _code(err) not in (_ERR_NOT_FOUND, _ERR_INVALID_ARGUMENT) or not target.startswith("GPU-"):
            raise
    # CUDA accepts a unique prefix of a GPU UUID; NVML wants the whole UUID.
    matches = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        if _text(pynvml.nvmlDeviceGetUUID(handle)).startswith(target):
            matches.append(handle)
    if len(matches) != 1:
        raise SamplerUnavailable(f"CUDA_VISIBLE_DEVICES entry {target!r} matches {len(matches)} "
                                 "GPUs in NVML; expected exactly one")
    return matches[0]


class NvmlSession:
    """NVML initialised for one GPU. ``close()`` shuts NVML down (idempotent).

    Raises SamplerUnavailable (with NVML shut down again) when NVML or the GPU is unavailable.
    """

    def __init__(self, cuda_index: int = 0, *, device_uuid: str | None = None,
                 env: Mapping[str, str] | None = None, nvml_module: Any = None):
        self.pynvml = pynvml = load_pynvml(nvml_module)
        env = os.environ if env is None else env
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            reason = _INIT_REASONS.get(_code(err), f"nvmlInit failed: {err}")
            raise SamplerUnavailable(f"NVML unavailable: {reason}") from err
        self._open = True
        try:
            if device_uuid is not None:
                uuid = device_uuid if device_uuid.startswith(("GPU-", "MIG-")) else f"GPU-{device_uuid}"
                target: int | str = uuid
            else:
                target = nvml_target(cuda_index, env.get("CUDA_VISIBLE_DEVICES"))
            self.target = target
            try:
                self.handle = _handle_for(pynvml, target)
            except pynvml.NVMLError as err:
                raise SamplerUnavailable(f"NVML has no GPU {target!r}: {err}") from err
        except BaseException:
            self.close()
            raise
        # metric group -> why it is None for the rest of the run
        self.unsupported: dict[str, str] = {}
        self._memory_v2 = getattr(pynvml, "nvmlMemory_v2", None) is not None
        self._temperature_v = hasattr(pynvml, "nvmlDeviceGetTemperatureV")
        self._power_field = getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", None)

    def close(self) -> None:
        if getattr(self, "_open", False):
            self._open = False
            try:
                self.pynvml.nvmlShutdown()
            except self.pynvml.NVMLError:
                pass  # shutting down a half-broken driver: nothing useful to report

    def _guard(self, group: str, read: Callable[[], Any]) -> Any:
        """``read()``, or None if ``group`` is unsupported (remembered) or this read failed."""
        if group in self.unsupported:
            return None
        try:
            return read()
        except self.pynvml.NVMLError as err:
            if _code(err) in _PERMANENT:
                self.unsupported[group] = str(err)
            return None

    # ---- readers, one per metric group --------------------------------------------------
    def utilization_pct(self) -> tuple[float | None, float | None]:
        """(kernel busy %, memory busy %) over NVML's last sample period (1/6 s to 1 s)."""
        util = self._guard("utilization", lambda: self.pynvml.nvmlDeviceGetUtilizationRates(self.handle))
        return (None, None) if util is None else (float(util.gpu), float(util.memory))

    def memory_bytes(self) -> tuple[float | None, float | None]:
        """(used, driver-reserved) bytes; v2 memory info, else v1 with reserved None."""
        if self._memory_v2:
            try:
                info = self.pynvml.nvmlDeviceGetMemoryInfo(self.handle, version=self.pynvml.nvmlMemory_v2)
                return float(info.used), float(info.reserved)
            except TypeError:  # a pynvml too old to take `version`
                self._memory_v2 = False
            except self.pynvml.NVMLError as err:
                if _code(err) not in _USE_FALLBACK:
                    return None, None
                self._memory_v2 = False
        info = self._guard("memory", lambda: self.pynvml.nvmlDeviceGetMemoryInfo(self.handle))
        return (None, None) if info is None else (float(info.used), None)

    def power_w(self) -> float | None:
        """Instantaneous board power (field NVML_FI_DEV_POWER_INSTANT) where the driver has
        it, else nvmlDeviceGetPowerUsage (a ~1 s average on Ampere and newer drivers)."""
        if self._power_field is not None:
            try:
                value = self.pynvml.nvmlDeviceGetFieldValues(self.handle, [self._power_field])[0]
            except self.pynvml.NVMLError as err:
                if _code(err) not in _USE_FALLBACK:
                    return None
                self._power_field = None
            else:
                if value.nvmlReturn == 0:
                    return _field_value(value) / 1000.0  # mW -> W
                if value.nvmlReturn not in _USE_FALLBACK:
                    return None
                self._power_field = None
        mw = self._guard("power", lambda: self.pynvml.nvmlDeviceGetPowerUsage(self.handle))
        return None if mw is None else mw / 1000.0

    def sm_clock_mhz(self) -> float | None:
        clock = self._guard("sm_clock", lambda: self.pynvml.nvmlDeviceGetClockInfo(
            self.handle, self.pynvml.NVML_CLOCK_SM))
        return None if clock is None else float(clock)

    def temperature_c(self) -> float | None:
        sensor = self.pynvml.NVML_TEMPERATURE_GPU
        if self._temperature_v:
            try:
                return float(self.pynvml.nvmlDeviceGetTemperatureV(self.handle, sensor))
            except self.pynvml.NVMLError as err:
                if _code(err) not in _USE_FALLBACK:
                    return None
                self._temperature_v = False  # older driver: the deprecated call still works
        temp = self._guard("temperature", lambda: self.pynvml.nvmlDeviceGetTemperature(self.handle, sensor))
        return None if temp is None else float(temp)

    def energy_j(self) -> float | None:
        """The board's energy counter since the driver loaded (mJ in NVML), in J."""
        mj = self._guard("energy", lambda: self.pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        return None if mj is None else mj / 1000.0


def _field_value(value: Any) -> float:
    # c_nvmlFieldValue_t.value is a union; valueType says which member holds the number.
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal",
              6: "usVal"}.get(value.valueType, "uiVal")
    return float(getattr(value.value, member))


def availability(cuda_index: int = 0, *, device_uuid: str | None = None,
                 env: Mapping[str, str] | None = None, nvml_module: Any = None) -> tuple[bool, str]:
    """(True, "GPU <name>") when NVML can sample that GPU, else (False, the reason). Never raises
    for an unavailable NVML; NVML is initialised and shut down again."""
    try:
        session = NvmlSession(cuda_index, device_uuid=device_uuid, env=env, nvml_module=nvml_module)
    except SamplerUnavailable as err:
        return False, err.reason
    try:
        name = session._guard("name", lambda: _text(session.pynvml.nvmlDeviceGetName(session.handle)))
        return True, f"GPU {session.target!r} ({name or 'unknown name'})"
    finally:
        session.close()


@dataclass(frozen=True)
class NvmlGpu:
    nvml_index: int
    name: str | None  # None: NVML did not answer for this GPU
    uuid: str | None
    memory_total_bytes: int | None


@dataclass(frozen=True)
class NvmlInfo:
    """What ``batchprof doctor`` shows about NVML."""

    driver_version: str | None
    nvml_version: str | None
    gpus: tuple[NvmlGpu, ...]


def query_system(nvml_module: Any = None) -> NvmlInfo:
    """Driver/NVML versions and every GPU NVML sees (a field NVML will not give is None).
    Raises SamplerUnavailable with the reason when NVML cannot be initialised."""
    pynvml = load_pynvml(nvml_module)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        reason = _INIT_REASONS.get(_code(err), f"nvmlInit failed: {err}")
        raise SamplerUnavailable(f"NVML unavailable: {reason}") from err

    def ask(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except pynvml.NVMLError:
            return None

    def text(value: Any) -> str | None:
        return None if value is None else _text(value)

    try:
        gpus = []
        for index in range(ask(pynvml.nvmlDeviceGetCount) or 0):
            handle = ask(pynvml.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                gpus.append(NvmlGpu(index, None, None, None))
                continue
            memory = ask(pynvml.nvmlDeviceGetMemoryInfo, handle)
            gpus.append(NvmlGpu(index, text(ask(pynvml.nvmlDeviceGetName, handle)),
                                text(ask(pynvml.nvmlDeviceGetUUID, handle)),
                                None if memory is None else int(memory.total)))
        return NvmlInfo(text(ask(pynvml.nvmlSystemGetDriverVersion)),
                        text(ask(pynvml.nvmlSystemGetNVMLVersion)), tuple(gpus))
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
