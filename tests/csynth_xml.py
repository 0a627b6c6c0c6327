"""A csynth.xml in the layout Vitis HLS writes (``<prj>/<sol>/syn/report/<top>_csynth.xml``), from given
figures, for the report readers' tests."""

CSYNTH = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <ReportVersion>
    <Version>2022.2</Version>
  </ReportVersion>
  <UserAssignments>
    <unit>ns</unit>
    <ProductFamily>virtexuplus</ProductFamily>
    <Part>{part}</Part>
    <TopModelName>{top}</TopModelName>
    <TargetClockPeriod>3.33</TargetClockPeriod>
    <ClockUncertainty>0.90</ClockUncertainty>
    <FlowTarget>vitis</FlowTarget>
  </UserAssignments>
  <PerformanceEstimates>
    <PipelineType>none</PipelineType>
    <SummaryOfTimingAnalysis>
      <unit>ns</unit>
      <EstimatedClockPeriod>{clock}</EstimatedClockPeriod>
    </SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency>
      <unit>clock cycles</unit>
      <Best-caseLatency>{best}</Best-caseLatency>
      <Average-caseLatency>undef</Average-caseLatency>
      <Worst-caseLatency>{worst}</Worst-caseLatency>
      <Best-caseRealTimeLatency>0.1 ms</Best-caseRealTimeLatency>
      <Average-caseRealTimeLatency>undef</Average-caseRealTimeLatency>
      <Worst-caseRealTimeLatency>undef</Worst-caseRealTimeLatency>
      <Interval-min>{best}</Interval-min>
      <Interval-max>{worst}</Interval-max>
    </SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources>
      <BRAM_18K>{bram18}</BRAM_18K>
      <DSP>{dsp}</DSP>
      <FF>{ff}</FF>
      <LUT>{lut}</LUT>
      <URAM>{uram}</URAM>
    </Resources>
    <AvailableResources>
      <BRAM_18K>4032</BRAM_18K>
      <DSP>9024</DSP>
      <FF>2607360</FF>
      <LUT>1303680</LUT>
      <URAM>960</URAM>
    </AvailableResources>
  </AreaEstimates>
</profile>
"""

HLS_APP = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="com.autoesl.autopilot.project" name="{top}_prj" top="{top}">
  <solutions xmlns="">
    <solution name="sol" status="active"/>
  </solutions>
</project>
"""


def csynth_xml(top="k", part="xcu280-fsvh2892-2L-e", clock="2.431", best=1234, worst="undef", bram18=250, dsp=3100,
               ff=400000, lut=290000, uram=128) -> str:
    return CSYNTH.format(**locals())
