"""Simulator feed: a believable live city of cases and sensor readings, published to the streams.

``python -m ingest simulate`` runs it in real time; ``make demo`` starts it under the supervisor.

Rate
----
``rate`` (``--rate``, default 2) is the number of **new cases per simulated second, district-wide,
at the weekday diurnal peak** (10:00 Asia/Shanghai). The rest of the day follows :data:`PROFILE`
(night ≈ 5 % of the peak, the 08:00–20:00 daytime averages ≈ 0.8 × rate, the 24-hour average is
≈ 0.48 × rate); non-working days (weekends, holidays, from chinesecalendar) run at 0.8 × that.
Hotspots move cases between grids, they do not add to the total. At the defaults (rate 2, speed 1)
that is ≈ 100–120 new cases per real minute in the daytime, ≈ 80 000 a day.

What it simulates
-----------------
- **Cases.** Arrivals are Poisson per time slice, spread over the grids by a fixed per-grid weight
  (by grid kind, with noise) and a few moving **hotspots** (a grid at several times the base rate for
  1–6 hours, with repeat complaints of one category close to one spot, then drifting to a neighbouring
  grid). Categories follow ``Category.weight(kind)``; sensor-only categories are left to the sensors.
  About 85 % of new cases are minor ones a grid worker handles on the spot (巡办合一: report → onsite
  → close, sometimes evaluate); the rest go report → register → dispatch (sometimes whistle) → accept
  → handle → resolve → close → evaluate over minutes to hours (whistled departments check in, 报到: most
  within the limit, some late, a few never), with SLA deadlines from the working
  calendar, ~15 % of them late, occasional returns (退回) and re-dispatch, rare reopens. The whole plan
  of a case is drawn when it is reported; each event is checked with :func:`core.lifecycle.apply`
  when it is emitted, so the simulator can never publish an illegal sequence.
- **Sensors.** A device registry derived from the grids (stable for a city, whatever the seed):
  ~5 devices per grid by grid kind. Each reports every ``heartbeat_s`` of simulated time a normal
  value well under its threshold; now and then an alarm (over the threshold for a while, then back
  under ``clear_below``) — a handful active at any time; a few devices go silent for a while;
  batteries drain slowly.

Everything is deterministic for a seed and a sequence of :meth:`Simulator.step` calls
(``random.Random`` / ``numpy.random.Generator`` of the seed; no global random state).
"""

from __future__ import annotations

import argparse
import heapq
import logging
import math
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from core import lifecycle
from core.lifecycle import OPEN_STATUSES, Status, TransitionError
from core.records import CITY_TZ
from core.sla import WorkingCalendar

log = logging.getLogger(__name__)

SENSOR_SOURCE = "iot"

# Relative rate of new cases by local hour (linear in between); 1.0 is the peak that ``rate`` names.
PROFILE: tuple[float, ...] = (
    0.10, 0.07, 0.05, 0.05, 0.05, 0.08, 0.18, 0.40, 0.70, 0.92, 1.00, 0.95,  # 00–11
    0.72, 0.62, 0.78, 0.92, 0.96, 0.85, 0.62, 0.48, 0.40, 0.32, 0.22, 0.14,  # 12–23
)
OFF_DAY_FACTOR = 0.8
P_ONSITE = 0.85  # share of new cases that are minor and handled on the spot (≈ 90 % of those resolved on a given day)
P_LATE = 0.15  # share of dispatched cases planned to run past a limit (≈ 10 % seen late within two days)
P_RETURN = 0.06
P_REOPEN = 0.02
P_WHISTLE = 0.5  # for dispatched cases of grade >= 3
N_HOTSPOTS = 4

# Sources and their shares. Dispatched cases come from everywhere; on-the-spot ones mostly from people on patrol
# (a grid worker also handles minor 随手拍 / 12345 reports in their grid on the spot).
DISPATCH_SOURCES = (("hotline12345", 0.40), ("citizen", 0.22), ("citymgmt", 0.23), ("patrol", 0.15))
ONSITE_SOURCES = (("patrol", 0.78), ("citymgmt", 0.10), ("citizen", 0.08), ("hotline12345", 0.04))
ID_PREFIX = {"hotline12345": "RX", "citizen": "SSP", "citymgmt": "SZCG", "patrol": "WG"}
DESC_PREFIX = {
    "hotline12345": "市民来电反映：",
    "citizen": "市民随手拍：",
    "citymgmt": "数字城管采集员上报：",
    "patrol": "网格员巡查发现：",
}
KIND_WEIGHT = {"村宅小区": 1.3, "企业园区": 0.9, "商贸": 1.5, "公共设施": 0.7, "山湖林田水": 0.35}

ROADS = (
    "光明大道", "华夏路", "光侨路", "东长路", "松白路", "观光路", "牛山路", "碧眼路", "圳园路", "河心路",
    "光明大街", "民生路", "宏发路", "长春路", "塘明大道", "玉律路", "根玉路", "创投路", "科裕路", "双明大道",
    "长凤路", "凤新路", "新湖路", "楼村大道", "迳口路", "公明北环大道", "振明路", "南光路", "田园路", "红坳路",
)
POIS = {
    "村宅小区": ("{x}新村{n}巷", "{x}花园{n}栋", "{x}小区北门", "{x}老村{n}号楼", "{x}社区党群服务中心旁"),
    "企业园区": ("{x}工业园{n}栋", "{x}科技园", "{x}产业园北区", "{x}工业区{n}号厂房"),
    "商贸": ("{x}农贸市场", "{x}商业街", "{x}广场", "{x}综合市场", "{x}美食街"),
    "公共设施": ("{x}公园", "{x}公交总站", "{x}学校门口", "{x}体育中心", "{x}地铁站C出口"),
    "山湖林田水": ("{x}水库", "{x}河碧道", "{x}森林公园", "{x}农场", "{x}湿地公园"),
}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高梁郑谢宋唐许邓冯韩曹曾彭萧蔡潘田董袁"
GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
         "秀英", "华", "慧", "建华", "志强", "晓燕", "海燕", "国强", "丽娟", "文", "斌", "婷", "玲")
PHONE_PREFIXES = ("130", "131", "132", "135", "136", "137", "138", "139", "150", "151", "152", "157",
                  "158", "159", "176", "177", "180", "181", "186", "187", "188", "189", "199")

# code -> (title suffix, description templates). {p} place, {r} road.
TEXTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "0101": ("附近暴露垃圾", ("{p}路边生活垃圾堆积未清运，散发异味，影响市容。", "{r}人行道旁垃圾桶满溢，垃圾散落地面。")),
    "0102": ("乱堆物料", ("{p}有人在公共通道堆放建筑材料和杂物，占用通道。", "{r}路边堆放大量废旧家具，影响通行。")),
    "0103": ("占道经营", ("{p}有流动摊贩占道经营，造成人行道拥堵。", "{r}路口早晚有水果摊占道摆卖。")),
    "0104": ("违规广告", ("{p}墙面和电线杆上张贴大量小广告。", "{r}沿街商铺私自设置落地广告牌。")),
    "0201": ("共享单车乱停放", ("{p}共享单车堆积，堵塞人行道和盲道。", "{r}公交站旁共享单车乱停乱放。")),
    "0202": ("机动车违停", ("{p}多辆机动车长期违停，占用消防通道。", "{r}路边车辆违停，影响公交进站。")),
    "0203": ("店外经营", ("{p}餐饮店在店外摆放桌椅经营。", "{r}沿街商铺出店经营，货物摆放至人行道。")),
    "0204": ("流浪乞讨人员", ("{p}有流浪人员长期滞留，需要救助。", "{r}天桥下有人露宿。")),
    "0301": ("井盖缺失破损", ("{p}路面井盖破损下沉，存在安全隐患。", "{r}人行道井盖缺失，已用杂物临时遮挡。")),
    "0302": ("道路破损", ("{p}路面出现坑洼，雨天积水，车辆通行颠簸。", "{r}人行道地砖松动破损。")),
    "0303": ("路灯不亮", ("{p}多盏路灯夜间不亮，行人出行不便。", "{r}路段路灯损坏，晚上一片漆黑。")),
    "0304": ("护栏损坏", ("{p}道路隔离护栏被撞倒，未修复。", "{r}河边护栏锈蚀断裂，存在坠落风险。")),
    "0401": ("绿地脏乱", ("{p}绿化带内有大量垃圾和杂物。", "{r}街心绿地被随意丢弃建筑垃圾。")),
    "0402": ("树木倒伏", ("{p}大树倒伏压住路面，阻碍通行。", "{r}行道树枝干断裂悬挂，随时可能掉落。")),
    "0403": ("毁绿占绿", ("{p}绿地被私自开垦种菜。", "{r}绿化带被铲除改作停车位。")),
    "0501": ("疑似违法建设", ("{p}有住户在楼顶加建铁皮房。", "{r}旁空地正在搭建临时建筑，未见公示。")),
    "0502": ("房屋存在安全隐患", ("{p}老旧房屋外墙开裂、墙皮脱落，存在坍塌风险。", "{r}出租屋楼梯和承重墙出现明显裂缝。")),
    "0503": ("工地夜间施工扰民", ("{p}工地夜间施工噪音大，影响居民休息。", "{r}工地早上六点前开始作业。")),
    "0504": ("工地扬尘", ("{p}工地未覆盖裸土，大风天扬尘严重。", "{r}渣土车未密闭运输，沿路洒漏。")),
    "0601": ("企业安全隐患", ("{p}厂房内消防通道堆放货物，员工未佩戴防护用品。", "{r}一家企业车间电线私拉乱接。")),
    "0602": ("危化品违规存放", ("{p}仓库内违规存放油漆、稀释剂等易燃物品。", "{r}小作坊在居住区存放危化品。")),
    "0603": ("燃气使用隐患", ("{p}餐饮店燃气软管老化，未安装报警器。", "{r}出租屋内违规使用液化气瓶。")),
    "0701": ("消防通道堵塞", ("{p}消防通道被车辆和杂物堵塞。", "{r}小区消防通道被设置地桩占用。")),
    "0702": ("发生火情", ("{p}有浓烟冒出，疑似发生火情。", "{r}路边垃圾堆起火。")),
    "0703": ("电动车违规充电", ("{p}楼道内有电动车飞线充电。", "{r}出租屋一楼楼梯间停放电动车充电。")),
    "0704": ("消防设施损坏", ("{p}消防栓损坏漏水，灭火器过期。", "{r}楼道应急照明和疏散指示灯不亮。")),
    "0801": ("邻里纠纷", ("{p}楼上楼下因漏水问题发生争执。", "{r}两户居民因占用公共空间发生纠纷。")),
    "0802": ("劳资纠纷", ("{p}十余名工人反映企业拖欠工资。", "{r}一家工厂停工，员工聚集讨薪。")),
    "0803": ("治安隐患", ("{p}夜间有可疑人员聚集。", "{r}出租屋频繁更换租客，疑似群租。")),
    "0804": ("群体性诉求", ("{p}数十名居民聚集反映诉求。", "{r}业主聚集反映物业问题。")),
    "0901": ("无证经营", ("{p}有店铺未办理营业执照即开业经营。", "{r}有无证小作坊加工食品。")),
    "0902": ("食品安全问题", ("{p}餐饮店后厨卫生条件差，食材过期。", "{r}摊贩售卖来源不明的肉类。")),
    "0903": ("价格违法", ("{p}商铺未明码标价，结算价格高于标价。", "{r}停车场收费未公示标准。")),
    "0904": ("特种设备隐患", ("{p}电梯运行异响，检验合格证过期。", "{r}工地塔吊未见检验标志。")),
    "1001": ("噪音扰民", ("{p}商铺大音量播放音乐招揽生意。", "{r}夜间广场舞音响声音过大。")),
    "1002": ("污水直排", ("{p}有污水直接排入雨水井。", "{r}旁河道排口有黑臭污水排出。")),
    "1003": ("废气排放", ("{p}工厂烟囱排放刺鼻气体。", "{r}餐饮油烟未经处理直排。")),
    "1004": ("露天焚烧", ("{p}有人露天焚烧垃圾，浓烟滚滚。", "{r}旁菜地焚烧秸秆。")),
    "1101": ("内涝积水", ("{p}路面积水较深，车辆无法通行。", "{r}下穿通道积水。")),
    "1102": ("河道污染", ("{p}河道水面漂浮大量垃圾，有异味。", "{r}旁河道水体发黑发臭。")),
    "1103": ("供水故障", ("{p}多栋楼停水，未收到停水通知。", "{r}路边水管爆裂，大量漏水。")),
    "1104": ("排水设施堵塞", ("{p}下水道堵塞，污水外溢。", "{r}雨水篦子被垃圾堵塞。")),
    "1201": ("困难群众求助", ("{p}独居老人行动不便，需要帮扶。", "{r}一户家庭因病致困，申请救助。")),
    "1202": ("公共卫生问题", ("{p}小区积水容器较多，蚊虫滋生。", "{r}公共厕所卫生差，无人保洁。")),
    "1203": ("城市更新诉求", ("{p}居民咨询旧改项目补偿进度。", "{r}城市更新项目停工，居民反映诉求。")),
}
ONSITE_NOTES = {
    "01": "已联系保洁人员现场清理完毕，拍照留存。",
    "02": "已现场劝导整改，恢复正常秩序。",
    "04": "已组织人员现场清理。",
    "07": "已现场劝导整改，隐患已消除。",
    "08": "已现场调解，双方达成一致。",
    "10": "已现场制止并宣传教育。",
}

# Sensor behaviour by type, relative to the configured threshold (so a changed sensors.yaml still works):
# normal    (lo, hi) base value as a share of threshold (of clear_below for water_level)
# noise     standard deviation as a share of threshold
# alarm     (lo, hi) value during an alarm as a multiple of threshold
# mtba_h    mean hours between alarms of one device; dur_min (lo, hi) minutes an alarm lasts
SENSOR_PARAMS: dict[str, dict[str, Any]] = {
    "smoke": {"normal": (0.03, 0.10), "noise": 0.015, "alarm": (1.1, 2.0), "mtba_h": 150, "dur_min": (8, 40)},
    "gas": {"normal": (0.02, 0.12), "noise": 0.01, "alarm": (1.1, 2.5), "mtba_h": 80, "dur_min": (10, 45)},
    "water_level": {"normal": (0.35, 0.75), "noise": 0.004, "alarm": (1.02, 1.2), "mtba_h": 100, "dur_min": (60, 240)},
    "manhole_tilt": {"normal": (0.0, 0.12), "noise": 0.01, "alarm": (1.2, 4.0), "mtba_h": 400, "dur_min": (90, 360)},
    "elevator_entrapment": {"normal": (0.0, 0.0), "noise": 0.0, "alarm": (1.0, 1.0), "mtba_h": 60, "dur_min": (8, 40)},
    "camera_ai": {"normal": (0.05, 0.35), "noise": 0.05, "alarm": (1.02, 1.24), "mtba_h": 10, "dur_min": (5, 20)},
}
DEFAULT_SENSOR_PARAMS = {"normal": (0.05, 0.2), "noise": 0.02, "alarm": (1.1, 1.5), "mtba_h": 200, "dur_min": (10, 60)}
SILENT_MEAN_H = 200  # mean hours between silent spells of one device
SILENT_MIN = (30, 240)
# Device types per grid kind, in the order a grid gets them (cycled to fill --devices-per-grid).
DEVICE_PLAN = {
    "村宅小区": ("manhole_tilt", "smoke", "gas", "elevator_entrapment", "smoke", "manhole_tilt", "gas"),
    "商贸": ("manhole_tilt", "smoke", "gas", "elevator_entrapment", "camera_ai", "smoke", "camera_ai"),
    "企业园区": ("manhole_tilt", "smoke", "smoke", "manhole_tilt", "smoke", "camera_ai"),
    "公共设施": ("manhole_tilt", "camera_ai", "camera_ai", "manhole_tilt", "camera_ai"),
    "山湖林田水": ("water_level", "manhole_tilt", "water_level", "manhole_tilt", "water_level"),
}
LOW_LYING_SHARE = 0.2  # share of other grids that also get a water-level gauge


def profile(at: datetime) -> float:
    """The diurnal factor (0..1] at ``at`` (Asia/Shanghai wall clock), linear between the hours."""
    local = at.astimezone(CITY_TZ)
    h = local.hour + local.minute / 60 + local.second / 3600
    i = int(h) % 24
    frac = h - int(h)
    return PROFILE[i] * (1 - frac) + PROFILE[(i + 1) % 24] * frac


def _iso(t: datetime) -> str:
    return t.astimezone(CITY_TZ).isoformat(timespec="seconds")


def _secs(x: float) -> timedelta:
    return timedelta(seconds=max(1, math.ceil(x)))


# --------------------------------------------------------------------------- state


@dataclass
class Hotspot:
    grid: str
    category: str
    multiplier: float
    focus: tuple[float, float]
    since: datetime
    until: datetime


@dataclass
class SimCase:
    source: str
    external_id: str
    grid: str
    plan: list[tuple[datetime, str, dict[str, Any]]]
    status: Status | None = None
    emitted: int = 0


@dataclass
class Device:
    id: str
    type: str
    grid: str
    lon: float
    lat: float
    heartbeat: float
    base: float
    battery0: float
    drain_per_day: float
    next_due: datetime | None = None
    alarm_until: datetime | None = None
    alarm_value: float = 0.0
    silent_until: datetime | None = None


@dataclass
class Stats:
    reports: int = 0
    events: int = 0
    readings: int = 0
    alarms: int = 0
    by_source: Counter = field(default_factory=Counter)


class Simulator:
    """Cases and sensor readings for slices of simulated time. See the module docstring.

    ``rate``: new cases per simulated second, district-wide, at the weekday peak (see :data:`PROFILE`).
    ``start``: the simulated time the first step starts from (default: the first step's slice start;
    :meth:`run` uses the wall clock). External ids carry it, so restarts never reuse an id.
    """

    def __init__(self, city, seed: int = 0, rate: float = 2.0, start: datetime | None = None, *,
                 sensors: bool = True, devices_per_grid: int = 5, hotspots: int = N_HOTSPOTS):
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.city = city
        self.seed = seed
        self.rate = float(rate)
        self.start = start.astimezone(UTC) if start is not None else None
        self.sensors_enabled = sensors
        self.n_hotspots = hotspots
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.calendar = WorkingCalendar()
        geo = city.geography
        self.geo = geo
        self.grids = geo.areas("grid")
        self.grid_by_code = {g.code: g for g in self.grids}
        # Per-grid details that do not depend on the seed: roads, a grid worker, a base weight.
        self._roads: dict[str, tuple[str, ...]] = {}
        self._worker: dict[str, str] = {}
        weights = []
        for g in self.grids:
            reg = random.Random(f"grid:{g.code}")
            self._roads[g.code] = tuple(reg.sample(ROADS, 3))
            self._worker[g.code] = reg.choice(SURNAMES) + reg.choice(GIVEN)
            weights.append(KIND_WEIGHT.get(g.kind or "", 1.0) * reg.lognormvariate(0, 0.3))
        self.grid_weights = weights
        # Category weights per kind (sensor-only categories have weight 0).
        self._cats_all: dict[str, tuple[list[str], list[float]]] = {}
        self._cats_onsite: dict[str, tuple[list[str], list[float]]] = {}
        for kind in {g.kind for g in self.grids}:
            pairs = [(c.code, c.weight(kind)) for c in city.categories.values() if c.weight(kind) > 0]
            self._cats_all[kind] = ([c for c, _ in pairs], [w for _, w in pairs])
            on = [(c, w) for c, w in pairs if city.categories[c].onsite]
            self._cats_onsite[kind] = ([c for c, _ in on], [w for _, w in on]) if on else self._cats_all[kind]
        self._neighbours = self._find_neighbours()
        self.devices: list[Device] = self._build_devices(devices_per_grid) if sensors else []
        self._dev_heap: list[tuple[datetime, int]] = []
        # Running state.
        self.clock: datetime | None = None
        self.run_tag: str | None = None
        self.hotspots: list[Hotspot] = []
        self.hotspot_log: list[Hotspot] = []
        self.cases: dict[str, SimCase] = {}
        self._heap: list[tuple[datetime, int, int, str]] = []
        self._case_no = 0
        self._push_no = 0
        self.stats = Stats()
        self.illegal = 0  # events dropped because lifecycle refused them (a bug if ever > 0)

    # ----------------------------------------------------------------- geography helpers

    def _find_neighbours(self) -> dict[str, list[str]]:
        from shapely.strtree import STRtree

        geoms = [self.geo.geometry(g.code) for g in self.grids]
        tree = STRtree(geoms)
        out: dict[str, list[str]] = {}
        for i, g in enumerate(self.grids):
            hits = tree.query(geoms[i].buffer(1e-7), predicate="intersects")
            out[g.code] = sorted(self.grids[int(j)].code for j in hits if int(j) != i)
        return out

    def _point_in(self, code: str, rng: random.Random, near: tuple[float, float] | None = None,
                  sigma: float = 0.0008) -> tuple[float, float]:
        """A random point inside grid ``code`` (rounded to 6 decimals), near ``near`` if given."""
        if near is not None:
            for _ in range(30):
                lon = round(rng.gauss(near[0], sigma), 6)
                lat = round(rng.gauss(near[1], sigma), 6)
                if self.geo.locate(lon, lat) == code:
                    return lon, lat
        x0, y0, x1, y1 = self.geo.geometry(code).bounds
        for _ in range(200):
            lon = round(rng.uniform(x0, x1), 6)
            lat = round(rng.uniform(y0, y1), 6)
            if self.geo.locate(lon, lat) == code:
                return lon, lat
        return self.grid_by_code[code].centroid

    def _community_stem(self, code: str) -> str:
        name = self.geo.area(code[:12]).name
        return name[:-2] if name.endswith("社区") else name

    # ----------------------------------------------------------------- sensors

    def _build_devices(self, per_grid: int) -> list[Device]:
        devices = []
        types = self.city.sensor_types
        for g in self.grids:
            reg = random.Random(f"devices:{g.code}")
            plan = list(DEVICE_PLAN.get(g.kind or "", ("manhole_tilt",)))
            if g.kind != "山湖林田水" and reg.random() < LOW_LYING_SHARE:
                plan.insert(1, "water_level")
            plan = [t for t in plan if t in types] or [t for t in ("manhole_tilt",) if t in types]
            if not plan or per_grid <= 0:
                continue
            n = max(1, per_grid + reg.choice((-1, 0, 0, 1)))
            chosen = [plan[i % len(plan)] for i in range(n)]
            seen: Counter = Counter()
            for t in chosen:
                seen[t] += 1
                st = types[t]
                p = SENSOR_PARAMS.get(t, DEFAULT_SENSOR_PARAMS)
                lon, lat = self._point_in(g.code, reg)
                ref = st.clear_below if t == "water_level" else st.threshold
                low = reg.random() < 0.03
                devices.append(Device(
                    id=f"{t}-{g.code}-{seen[t]:02d}", type=t, grid=g.code, lon=lon, lat=lat,
                    heartbeat=float(st.heartbeat_s), base=ref * reg.uniform(*p["normal"]),
                    battery0=reg.uniform(8, 20) if low else reg.uniform(60, 100),
                    drain_per_day=reg.uniform(0.05, 0.3),
                ))
        return devices

    def _sensor_step(self, t0: datetime, now: datetime) -> list[dict[str, Any]]:
        rng = self.rng
        if not self._dev_heap and self.devices:
            for i, d in enumerate(self.devices):
                d.next_due = t0 + timedelta(seconds=rng.uniform(0, d.heartbeat))
                self._dev_heap.append((d.next_due, i))
            heapq.heapify(self._dev_heap)
        out = []
        types = self.city.sensor_types
        origin = self.start or t0
        while self._dev_heap and self._dev_heap[0][0] <= now:
            ts, i = heapq.heappop(self._dev_heap)
            d = self.devices[i]
            st = types[d.type]
            p = SENSOR_PARAMS.get(d.type, DEFAULT_SENSOR_PARAMS)
            hb_h = d.heartbeat / 3600
            d.next_due = ts + timedelta(seconds=d.heartbeat * rng.uniform(0.98, 1.02))
            heapq.heappush(self._dev_heap, (d.next_due, i))
            if d.silent_until is not None:
                if ts < d.silent_until:
                    continue
                d.silent_until = None
            if d.alarm_until is None and rng.random() < -math.expm1(-hb_h / SILENT_MEAN_H):
                minutes = max(rng.uniform(*SILENT_MIN), 2.5 * d.heartbeat / 60)
                d.silent_until = ts + timedelta(minutes=minutes)
                continue
            if d.alarm_until is not None and ts >= d.alarm_until:
                d.alarm_until = None
            if d.alarm_until is None and rng.random() < -math.expm1(-hb_h / p["mtba_h"]):
                d.alarm_until = ts + timedelta(minutes=rng.uniform(*p["dur_min"]))
                d.alarm_value = st.threshold * rng.uniform(*p["alarm"])
                self.stats.alarms += 1
            if d.alarm_until is not None:
                value = d.alarm_value * (1 + rng.gauss(0, 0.03)) if p["noise"] else d.alarm_value
                value = max(value, st.threshold)
            else:
                value = d.base + rng.gauss(0, p["noise"] * st.threshold) if p["noise"] else d.base
                value = min(max(value, 0.0), 0.9 * st.clear_below)
            days = (ts - origin).total_seconds() / 86400
            battery = round(min(100.0, max(0.0, d.battery0 - d.drain_per_day * max(days, 0.0))), 1)
            out.append({
                "source": SENSOR_SOURCE, "device_id": d.id, "type": d.type, "value": round(value, 3),
                "ts": _iso(ts), "lon": d.lon, "lat": d.lat, "grid_code": d.grid, "battery": battery,
            })
        self.stats.readings += len(out)
        return out

    @property
    def active_alarms(self) -> int:
        now = self.clock
        return sum(1 for d in self.devices if d.alarm_until is not None and (now is None or d.alarm_until > now))

    @property
    def silent_devices(self) -> int:
        now = self.clock
        return sum(1 for d in self.devices if d.silent_until is not None and (now is None or d.silent_until > now))

    # ----------------------------------------------------------------- hotspots

    def _new_hotspot(self, at: datetime, grid: str | None = None, category: str | None = None) -> Hotspot:
        rng = self.rng
        taken = {h.grid for h in self.hotspots}
        if grid is None:
            codes = [g.code for g in self.grids if g.code not in taken]
            ws = [w for g, w in zip(self.grids, self.grid_weights, strict=True) if g.code not in taken]
            grid = rng.choices(codes, weights=ws)[0]
        kind = self.grid_by_code[grid].kind
        if category is None or self.city.categories[category].weight(kind) <= 0:
            codes, ws = self._cats_all[kind]
            category = rng.choices(codes, weights=ws)[0]
        hours = min(6.0, max(1.0, rng.expovariate(1 / 3)))
        h = Hotspot(grid=grid, category=category, multiplier=rng.uniform(5, 8),
                    focus=self._point_in(grid, rng), since=at, until=at + timedelta(hours=hours))
        self.hotspot_log.append(h)
        if len(self.hotspot_log) > 1000:
            del self.hotspot_log[:100]
        return h

    def _move_hotspots(self, now: datetime) -> None:
        if not self.hotspots and self.n_hotspots:
            for _ in range(min(self.n_hotspots, len(self.grids))):
                self.hotspots.append(self._new_hotspot(now))
            return
        for i, h in enumerate(self.hotspots):
            if now < h.until:
                continue
            taken = {x.grid for x in self.hotspots}
            near = [c for c in self._neighbours.get(h.grid, []) if c not in taken]
            if near and self.rng.random() < 0.7:  # drift next door, the same trouble spreading
                self.hotspots[i] = self._new_hotspot(h.until, self.rng.choice(near), h.category)
            else:
                self.hotspots[i] = self._new_hotspot(h.until)

    # ----------------------------------------------------------------- cases

    def _make_case(self, t0: datetime, grid: str, hotspot: Hotspot | None) -> SimCase:
        rng = self.rng
        area = self.grid_by_code[grid]
        kind = area.kind
        onsite = rng.random() < P_ONSITE
        category = source = near = None
        if hotspot is not None and rng.random() < 0.6:
            cat = self.city.categories[hotspot.category]
            if not onsite or cat.onsite:
                category, near = hotspot.category, hotspot.focus
                if not onsite and rng.random() < 0.7:
                    source = rng.choice(("hotline12345", "citizen"))  # repeat complaints
        if category is None:
            codes, ws = (self._cats_onsite if onsite else self._cats_all)[kind]
            category = rng.choices(codes, weights=ws)[0]
        cat = self.city.categories[category]
        onsite = onsite and cat.onsite
        if source is None:
            pool = ONSITE_SOURCES if onsite else DISPATCH_SOURCES
            source = rng.choices([s for s, _ in pool], weights=[w for _, w in pool])[0]
        self._case_no += 1
        ext = f"{ID_PREFIX.get(source, 'SIM')}-{self.run_tag}-{self._case_no:06d}"
        lon, lat = self._point_in(grid, rng, near=near)
        grade = cat.default_grade
        if grade < 4 and rng.random() < 0.05:
            grade += 1
        road = rng.choice(self._roads[grid])
        stem = self._community_stem(grid)
        community = self.geo.area(grid[:12]).name
        street = self.geo.area(grid[:9]).name
        num = rng.randint(1, 300)
        if rng.random() < 0.5:
            place = f"{community}{road}"
        else:
            place = community + rng.choice(POIS.get(kind, ("{x}",))).format(x=stem, n=rng.randint(1, 40))
        suffix, descs = TEXTS.get(category, (cat.name, ("{p}发现" + cat.name + "问题，请尽快处理。",)))
        if not suffix.startswith("附近") and place.endswith("路") and rng.random() < 0.5:
            place += "附近"
        title = f"{place}{suffix}"
        desc = DESC_PREFIX.get(source, "") + rng.choice(descs).format(p=place, r=road)
        report: dict[str, Any] = {
            "category": category, "grade": grade, "title": title, "description": desc,
            "address": f"深圳市光明区{street}{community}{road}{num}号", "lon": lon, "lat": lat,
        }
        worker = self._worker[grid]
        if source in ("hotline12345", "citizen"):
            report["reporter_name"] = rng.choice(SURNAMES) + rng.choice(("先生", "女士"))
            report["reporter_phone"] = rng.choice(PHONE_PREFIXES) + "".join(str(rng.randrange(10)) for _ in range(8))
        else:
            report["grid_code"] = grid
            report["reporter_name"] = worker if source == "patrol" else "采集员" + rng.choice(SURNAMES) + rng.choice(GIVEN)
            report["actor"] = f"网格员{worker}" if source == "patrol" else "数字城管采集员"
        if onsite:
            report["onsite"] = True
            plan = self._plan_onsite(t0, report, cat, worker)
        else:
            plan = self._plan_dispatch(t0, report, cat, grid, source)
        return SimCase(source=source, external_id=ext, grid=grid, plan=plan)

    def _plan_onsite(self, t0: datetime, report: dict, cat, worker: str) -> list:
        rng = self.rng
        plan = [(t0, "report", report)]
        t = t0
        if rng.random() < 0.1:
            t += _secs(rng.expovariate(1 / 180))
            plan.append((t, "register", {"actor": "社区网格工作站"}))
        t += _secs(min(3600, 60 + rng.expovariate(1 / 480)))
        note = ONSITE_NOTES.get(cat.code[:2], "网格员现场处置完毕，已拍照留存。")
        plan.append((t, "onsite", {"actor": f"网格员{worker}", "note": note}))
        t += _secs(60 + rng.expovariate(1 / 1800))
        plan.append((t, "close", {"actor": "社区网格工作站", "note": "现场核查属实，予以结案。"}))
        if rng.random() < 0.25:
            t += _secs(60 + rng.expovariate(1 / 3600))
            plan.append((t, "evaluate", {"rating": rng.choices((3, 4, 5), weights=(1, 3, 6))[0], "actor": "居民"}))
        return plan

    def _street_unit(self, grid: str) -> str | None:
        code = f"zf-{grid[6:9]}"
        return code if code in self.city.departments else None

    def _department(self, cat, grid: str) -> str:
        dept = cat.department
        unit = self._street_unit(grid)
        if dept == "cg" and unit and self.rng.random() < 0.5:
            return unit  # street-level law enforcement handles much of 城管's work
        return dept

    def _plan_dispatch(self, t0: datetime, report: dict, cat, grid: str, source: str) -> list:
        rng = self.rng
        accept_due = self.calendar.add(t0, cat.accept_limit).due
        due = self.calendar.add(t0, cat.complete_limit).due
        wa = max(60.0, (accept_due - t0).total_seconds())
        wc = max(120.0, (due - t0).total_seconds())
        late = rng.random() < P_LATE
        late_accept = late and rng.random() < 0.4
        plan: list = [(t0, "report", report)]
        t = t0

        def add(delay: float, action: str, fields: dict | None = None) -> None:
            nonlocal t
            t = t + _secs(delay)
            plan.append((t, action, fields or {}))

        center = "街道指挥分中心"
        extra_events: list = []  # events off the main line (check-ins), merged in by time at the end
        add(min(max(20, rng.expovariate(1 / 360)), 0.15 * wa), "register", {"actor": center})
        dept = self._department(cat, grid)
        add(min(max(20, rng.expovariate(1 / 480)), 0.15 * wa), "dispatch", {"departments": [dept], "actor": center})
        if rng.random() < P_RETURN:
            add(max(30, min(rng.expovariate(1 / 1200), 0.3 * wa)), "return",
                {"actor": self._short(dept), "note": "非本单位职责，申请退回重新派遣。"})
            others = [d for d in (cat.department, self._street_unit(grid), "cg", "zj") if d and d != dept]
            dept = rng.choice(others) if others else dept
            # A return leads back to registered: dispatch again.
            add(max(30, rng.expovariate(1 / 600)), "dispatch", {"departments": [dept], "actor": center,
                                                                "note": "退回后重新派遣"})
        elif report["grade"] >= 3 and rng.random() < P_WHISTLE:
            pool = [d for d in ("yj", "ga", "xiaofang", "zj", "wj", self._street_unit(grid))
                    if d and d != dept and d in self.city.departments]
            extra = rng.sample(pool, min(len(pool), rng.choice((2, 3))))
            if extra:
                add(max(20, min(rng.expovariate(1 / 300), 0.1 * wa)), "whistle",
                    {"departments": extra, "actor": center, "note": "吹哨：多部门联合处置"})
                for d in extra:  # 报到: most summoned departments report within the limit, some late, a few never
                    u = rng.random()
                    delay = rng.uniform(120, 1680) if u < 0.8 else rng.uniform(1860, 5400) if u < 0.92 else None
                    if delay is not None:
                        extra_events.append((t + _secs(delay), "checkin",
                                             {"departments": [d], "actor": self._short(d), "note": "到场报到"}))
        if late_accept:
            t = max(t, accept_due)
            add(60 + rng.expovariate(1 / min(max(0.5 * wa, 1200), 7200)), "accept", {"actor": self._short(dept)})
        else:
            room = (accept_due - t).total_seconds()
            add(max(20, min(rng.expovariate(1 / 1800), 0.8 * room)), "accept", {"actor": self._short(dept)})
        add(max(30, rng.expovariate(1 / 900)), "handle", {"actor": self._short(dept)})
        room = (due - t).total_seconds()
        if (late and not late_accept) or room <= 60:
            t = max(t, due)
            add(60 + rng.expovariate(1 / min(max(0.3 * wc, 1800), 8 * 3600)), "resolve",
                {"actor": self._short(dept), "note": "已处置完毕（超期）"})
        else:
            mean = min(max(0.25 * room, 600), 6 * 3600)
            add(max(60, min(rng.expovariate(1 / mean), 0.9 * room)), "resolve",
                {"actor": self._short(dept), "note": "已处置完毕"})
        add(60 + rng.expovariate(1 / 1800), "close", {"actor": center, "note": "核查属实，予以结案。"})
        p_eval = 0.8 if source in ("hotline12345", "citizen") else 0.4
        if rng.random() < p_eval:
            weights = (8, 10, 20, 30, 32) if late else (2, 4, 12, 32, 50)
            add(60 + rng.expovariate(1 / 7200), "evaluate",
                {"rating": rng.choices((1, 2, 3, 4, 5), weights=weights)[0], "actor": "回访"})
        if rng.random() < P_REOPEN:
            add(600 + rng.expovariate(1 / 10800), "reopen", {"actor": center, "note": "回访不满意，重新办理。"})
            add(max(30, rng.expovariate(1 / 600)), "dispatch", {"departments": [dept], "actor": center})
            add(max(30, rng.expovariate(1 / 1800)), "accept", {"actor": self._short(dept)})
            add(max(30, rng.expovariate(1 / 900)), "handle", {"actor": self._short(dept)})
            add(600 + rng.expovariate(1 / 7200), "resolve", {"actor": self._short(dept), "note": "重新处置完毕"})
            add(60 + rng.expovariate(1 / 1800), "close", {"actor": center, "note": "复核通过，予以结案。"})
        return sorted(plan + extra_events, key=lambda step: step[0]) if extra_events else plan

    def _short(self, dept: str) -> str:
        d = self.city.departments.get(dept)
        return d.short if d is not None else dept

    def _push(self, case: SimCase) -> None:
        if case.emitted < len(case.plan):
            self._push_no += 1
            heapq.heappush(self._heap, (case.plan[case.emitted][0], self._push_no, 0, case.external_id))
        else:
            self.cases.pop(case.external_id, None)

    def _arrivals(self, t0: datetime, now: datetime) -> None:
        seconds = (now - t0).total_seconds()
        if seconds <= 0 or self.rate <= 0:
            return
        mid = t0 + (now - t0) / 2
        factor = profile(mid)
        if not self.calendar.is_workday(mid.astimezone(CITY_TZ).date()):
            factor *= OFF_DAY_FACTOR
        n = int(self.np_rng.poisson(self.rate * factor * seconds))
        if n == 0:
            return
        hot = {h.grid: h for h in self.hotspots}
        total_base = sum(self.grid_weights)
        # Hotspots take their multiple of the base share; the total stays rate × profile.
        ws = [w * (hot[g.code].multiplier if g.code in hot else 1.0) / total_base
              for g, w in zip(self.grids, self.grid_weights, strict=True)]
        codes = [g.code for g in self.grids]
        times = sorted(t0 + timedelta(seconds=self.rng.uniform(0, seconds)) for _ in range(n))
        for t in times:
            t = t.replace(microsecond=0)
            grid = self.rng.choices(codes, weights=ws)[0]
            case = self._make_case(t, grid, hot.get(grid))
            self.cases[case.external_id] = case
            self.stats.reports += 1
            self.stats.by_source[case.source] += 1
            self._push(case)

    def _emit(self, now: datetime) -> list[dict[str, Any]]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, _, _, ext = heapq.heappop(self._heap)
            case = self.cases.get(ext)
            if case is None:
                continue
            t, action, fields = case.plan[case.emitted]
            case.emitted += 1
            try:
                case.status = lifecycle.apply(case.status, action).status
            except TransitionError as exc:  # never publish what the rule refuses
                log.error("simulator bug: case %s: %s — dropping the rest of its plan", ext, exc.reason)
                self.illegal += 1
                self.cases.pop(ext, None)
                continue
            ev = {"source": case.source, "external_id": ext, "event": action,
                  "event_id": f"{action}-{case.emitted}", "occurred_at": _iso(t)}
            ev.update(fields)
            out.append(ev)
            self._push(case)
        self.stats.events += len(out)
        return out

    @property
    def open_cases(self) -> int:
        return sum(1 for c in self.cases.values() if c.status in OPEN_STATUSES)

    # ----------------------------------------------------------------- the step

    def step(self, sim_now: datetime, dt: timedelta) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Case events and sensor readings for the simulated slice (sim_now - dt, sim_now].

        Every record is timed at or before ``sim_now``; events of one case come in time order.
        """
        if sim_now.tzinfo is None:
            raise ValueError("sim_now must be timezone-aware")
        now = sim_now.astimezone(UTC)
        t0 = now - dt
        if self.clock is not None and t0 < self.clock:
            t0 = self.clock  # never simulate a slice twice
        if self.start is None:
            self.start = t0
        if self.run_tag is None:
            self.run_tag = f"{self.start.astimezone(CITY_TZ):%y%m%d%H%M%S}S{self.seed}"
        self._move_hotspots(t0)
        self._arrivals(t0, now)
        cases = self._emit(now)
        readings = self._sensor_step(t0, now) if self.sensors_enabled else []
        self.clock = now
        return cases, readings

    # ----------------------------------------------------------------- publishing

    def backfill(self, producer, hours: float, until: datetime | None = None, slice_s: float = 10.0,
                 chunk: int = 5000) -> tuple[int, int]:
        """Publish ``hours`` of simulated history ending at ``until`` (default now) as fast as possible.

        Records carry their simulated (past) times. Returns (case events, readings) published.
        """
        until = (until or datetime.now(UTC)).astimezone(UTC)
        now = self.clock or until - timedelta(hours=hours)
        if self.start is None:
            self.start = now
        self.clock = now
        dt = timedelta(seconds=slice_s)
        buf_c: list[dict] = []
        buf_r: list[dict] = []
        n_c = n_r = 0
        next_report = now + timedelta(hours=1)
        started = time.monotonic()
        while now < until:
            now = min(now + dt, until)
            c, r = self.step(now, dt)
            buf_c += c
            buf_r += r
            if len(buf_c) + len(buf_r) >= chunk:
                n_c, n_r = n_c + len(buf_c), n_r + len(buf_r)
                _publish(producer, buf_c, buf_r)
                buf_c, buf_r = [], []
            if now >= next_report or now >= until:
                next_report += timedelta(hours=1)
                print(f"backfill: simulated up to {now.astimezone(CITY_TZ):%m-%d %H:%M} — {n_c + len(buf_c)} case events, "
                      f"{n_r + len(buf_r)} readings, {self.open_cases} open cases "
                      f"({time.monotonic() - started:.1f} s)", flush=True)
        n_c, n_r = n_c + len(buf_c), n_r + len(buf_r)
        _publish(producer, buf_c, buf_r)
        return n_c, n_r

    def run(self, producer, speed: float = 1.0, tick: float = 1.0, duration: float | None = None,
            stop_event: threading.Event | None = None) -> Stats:
        """Run in real time: each tick advances simulated time by ``tick * speed`` seconds and publishes
        what :meth:`step` returns. Stops after ``duration`` real seconds or when ``stop_event`` is set."""
        if tick <= 0 or speed <= 0:
            raise ValueError("tick and speed must be > 0")
        stop = stop_event or threading.Event()
        sim_now = self.clock or self.start or datetime.now(UTC).replace(microsecond=0)
        if self.clock is None:
            self.clock = sim_now
        dt = timedelta(seconds=tick * speed)
        began = last_log = next_tick = time.monotonic()
        totals = Stats()
        window = [0, 0, 0]  # reports, events, readings since the last summary
        warned_ahead = False
        failures = 0
        while not stop.is_set():
            if duration is not None and time.monotonic() - began >= duration:
                break
            sim_now = sim_now + dt
            reports_before = self.stats.reports
            cases, readings = self.step(sim_now, dt)
            try:
                _publish(producer, cases, readings)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - Redis down: report, keep going, give up after a while
                failures += 1
                log.warning("simulator: publish failed (%s), %d records lost", exc, len(cases) + len(readings))
                if failures >= 10:
                    raise
            new = self.stats.reports - reports_before
            totals.reports += new
            totals.events += len(cases)
            totals.readings += len(readings)
            window[0] += new
            window[1] += len(cases)
            window[2] += len(readings)
            mono = time.monotonic()
            if mono - last_log >= 60:
                log.info("simulator: sim %s | last %.0f s: %d new cases, %d case events, %d readings | "
                         "open cases %d, active alarms %d, silent devices %d",
                         sim_now.astimezone(CITY_TZ).strftime("%m-%d %H:%M:%S"), mono - last_log, *window,
                         self.open_cases, self.active_alarms, self.silent_devices)
                window = [0, 0, 0]
                last_log = mono
            if not warned_ahead and sim_now - datetime.now(UTC) > timedelta(hours=20):
                log.warning("simulator: simulated time is 20 h ahead of the clock; records more than 24 h "
                            "in the future are rejected — lower --speed")
                warned_ahead = True
            next_tick += tick
            delay = next_tick - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            elif delay < -5 * tick:
                next_tick = time.monotonic()  # fell behind: carry on rather than bursting to catch up
        log.info("simulator: stopped after %.0f s: %d new cases, %d case events, %d readings",
                 time.monotonic() - began, totals.reports, totals.events, totals.readings)
        return totals


def _publish(producer, cases: list[dict], readings: list[dict]) -> None:
    if cases:
        producer.cases(cases)
    if readings:
        producer.sensors(readings)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=2.0,
                        help="new cases per simulated second, district-wide, at the weekday peak (10:00); the rest of "
                             "the day follows a diurnal profile (default 2: ~100 cases/min in the daytime)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many real seconds (default: run until stopped)")
    parser.add_argument("--tick", type=float, default=1.0, help="real seconds between publishes (default 1)")
    parser.add_argument("--backfill", type=float, default=0.0, metavar="HOURS",
                        help="first publish the previous HOURS of simulated history at once (default 0)")
    parser.add_argument("--no-sensors", action="store_true", help="publish cases only")
    parser.add_argument("--devices-per-grid", type=int, default=5, help="sensor devices per grid, about (default 5)")


def main(args: argparse.Namespace) -> int:
    from config.city import get_city
    from config.settings import get_settings
    from store.services import get_redis
    from store.streams import Producer

    settings = get_settings()
    producer = Producer(get_redis(settings), settings, source="simulator")
    sim = Simulator(get_city(), seed=args.seed, rate=args.rate, sensors=not args.no_sensors,
                    devices_per_grid=args.devices_per_grid)
    stop = threading.Event()

    def _stop(signum, frame):  # noqa: ARG001
        log.info("simulator: signal %s, stopping", signum)
        stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        log.info("simulator: rate %.2f cases/s at peak, speed %.1f×, %d grids, %d devices",
                 sim.rate, args.speed, len(sim.grids), len(sim.devices))
        if args.backfill and args.backfill > 0:
            now = datetime.now(UTC).replace(microsecond=0)
            n_c, n_r = sim.backfill(producer, args.backfill, until=now)
            print(f"backfill: done, {n_c} case events and {n_r} readings for the last {args.backfill:g} h", flush=True)
        if not stop.is_set():
            sim.run(producer, speed=args.speed, tick=args.tick, duration=args.duration, stop_event=stop)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
