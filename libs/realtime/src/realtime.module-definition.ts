import { ConfigurableModuleBuilder, Inject } from '@nestjs/common';
import type { RealtimeModuleOptions } from './realtime.options';

export const {
  ConfigurableModuleClass: RealtimeConfigurableModule,
  MODULE_OPTIONS_TOKEN: REALTIME_OPTIONS,
  OPTIONS_TYPE: REALTIME_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: REALTIME_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<RealtimeModuleOptions>()
  .setClassMethodName('forRoot')
  .setExtras({ isGlobal: true }, (definition, extras) => ({
    ...definition,
    global: extras.isGlobal,
  }))
  .build();

/** Injects the options given to `RealtimeModule.forRoot`. */
export const InjectRealtimeOptions = (): ParameterDecorator & PropertyDecorator =>
  Inject(REALTIME_OPTIONS);
