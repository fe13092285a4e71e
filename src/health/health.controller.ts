import { Controller, Get, Inject } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import {
  HealthCheck,
  HealthCheckService,
  HealthIndicatorService,
  TypeOrmHealthIndicator,
} from '@nestjs/terminus';
import { CHANGE_BUS, type ChangeBus } from '@app/realtime';

/** `GET /health`: the database and the change bus (Redis when configured). */
@ApiTags('health')
@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly db: TypeOrmHealthIndicator,
    private readonly indicators: HealthIndicatorService,
    @Inject(CHANGE_BUS) private readonly bus: ChangeBus,
  ) {}

  @Get()
  @HealthCheck()
  check() {
    return this.health.check([
      () => this.db.pingCheck('database'),
      async () => {
        const indicator = this.indicators.check('changeBus');
        const problem = await this.bus.health();
        return problem ? indicator.down({ message: problem }) : indicator.up();
      },
    ]);
  }
}
